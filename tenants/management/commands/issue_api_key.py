from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Issue a platform API key for a tenant and print it once."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--name", default="API key")

    def handle(self, *args, tenant, name, **options):
        try:
            tenant_row = Tenant.objects.get(slug=tenant)
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {tenant!r}") from None
        api_key, raw_key = services.api_key_issue(tenant=tenant_row, name=name)
        self.stderr.write(f"Issued {api_key.name} ({api_key.prefix}…). It is shown only once:")
        self.stdout.write(raw_key)
