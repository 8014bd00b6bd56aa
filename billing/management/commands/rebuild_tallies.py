from datetime import date

from django.core.management.base import BaseCommand, CommandError

from billing.services import tally_rebuild
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Recompute a tenant's daily usage totals, and the cost of each session with usage on "
        "those days, from the ledger for a date range."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--start", required=True, help="YYYY-MM-DD")
        parser.add_argument("--end", required=True, help="YYYY-MM-DD (inclusive)")

    def handle(self, *args, tenant: str, start: str, end: str, **options):
        tenant_row = Tenant.objects.filter(slug=tenant).first()
        if tenant_row is None:
            raise CommandError(f"no tenant with slug {tenant!r}")
        try:
            first, last = date.fromisoformat(start), date.fromisoformat(end)
        except ValueError as error:
            raise CommandError(str(error)) from error
        if last < first:
            raise CommandError("--end is before --start")
        days = tally_rebuild(tenant_id=tenant_row.pk, start=first, end=last)
        self.stdout.write(f"{tenant}: {days} days recomputed")
