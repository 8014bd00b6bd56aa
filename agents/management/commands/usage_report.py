import json

from django.core.management.base import BaseCommand, CommandError

from billing.selectors import TOKEN_FIELDS, month_start, tenant_month_token_totals
from tenants.models import Tenant


class Command(BaseCommand):
    help = "Token totals per model and token type for a tenant's current month."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, tenant: str, as_json: bool, **options):
        tenant_row = Tenant.objects.filter(slug=tenant).first()
        if tenant_row is None:
            raise CommandError(f"no tenant with slug {tenant!r}")
        totals = tenant_month_token_totals(tenant_id=tenant_row.pk)
        month = month_start().strftime("%Y-%m")
        if as_json:
            self.stdout.write(json.dumps({"tenant": tenant, "month": month, "models": totals}))
            return
        self.stdout.write(f"Usage of {tenant_row.name} ({tenant}) in {month}")
        if not totals:
            self.stdout.write("  no usage yet")
        for model, values in totals.items():
            self.stdout.write(f"  {model}: {values['responses']} usage events")
            for name in (*TOKEN_FIELDS, "audio_ms"):
                if values[name]:
                    self.stdout.write(f"    {name:<22} {values[name]:>12,}")
