from datetime import date

from django.core.management.base import BaseCommand, CommandError

from billing import pricing
from billing.services import MonthNotOver, invoice_close_month
from tenants.models import Tenant


def parse_month(value: str) -> date:
    try:
        year, month = value.split("-")
        return date(int(year), int(month), 1)
    except ValueError:
        raise CommandError(f"--month must look like 2026-10, not {value!r}") from None


class Command(BaseCommand):
    help = "Close a tenant's month into an issued invoice (running it again changes nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--month", required=True, help="YYYY-MM")

    def handle(self, *args, tenant: str, month: str, **options):
        tenant_row = Tenant.objects.filter(slug=tenant).first()
        if tenant_row is None:
            raise CommandError(f"no tenant with slug {tenant!r}")
        try:
            invoice = invoice_close_month(tenant_id=tenant_row.pk, month=parse_month(month))
        except (MonthNotOver, pricing.MissingPrice) as error:
            raise CommandError(str(error)) from error
        if invoice is None:
            self.stdout.write(f"{tenant}: nothing to bill up to the end of {month}")
            return
        self.stdout.write(
            f"{invoice.number}: {invoice.status}, {invoice.event_count} events, "
            f"provider cost ${invoice.provider_total}, billed ${invoice.billed_total}, "
            f"total ${invoice.total}"
        )
