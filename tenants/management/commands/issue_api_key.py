from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Issue a platform API key for a tenant and print it once."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--name", default="API key")
        parser.add_argument(
            "--scopes", default="realtime,read,write",
            help="Comma-separated: realtime (sockets), read and write (the REST API)",
        )  # fmt: skip

    def handle(self, *args, tenant, name, scopes, **options):
        try:
            tenant_row = Tenant.objects.get(slug=tenant)
        except Tenant.DoesNotExist:
            raise CommandError(f"no tenant with slug {tenant!r}") from None
        try:
            api_key, raw_key = services.api_key_issue(
                tenant=tenant_row, name=name, scopes=[s.strip() for s in scopes.split(",")]
            )
        except services.ServiceError as error:
            raise CommandError(str(error)) from None
        self.stderr.write(f"Issued {api_key.name} ({api_key.prefix}…). It is shown only once:")
        self.stdout.write(raw_key)
