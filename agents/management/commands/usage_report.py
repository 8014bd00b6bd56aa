import json
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError

from billing import pricing
from billing.selectors import (
    TOKEN_FIELDS,
    month_start,
    plan_terms,
    tenant_month_costs,
    tenant_month_token_totals,
)
from tenants.models import Tenant


def plain(value: Decimal) -> str:
    return f"{value.normalize():f}"


class Command(BaseCommand):
    help = "Token totals and cost per model and token type for a tenant's current month."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--json", action="store_true", dest="as_json")

    def handle(self, *args, tenant: str, as_json: bool, **options):
        tenant_row = Tenant.objects.filter(slug=tenant).first()
        if tenant_row is None:
            raise CommandError(f"no tenant with slug {tenant!r}")
        totals = tenant_month_token_totals(tenant_id=tenant_row.pk)
        costs = tenant_month_costs(tenant_id=tenant_row.pk)
        terms = plan_terms(tenant_id=tenant_row.pk)
        provider_cost = sum(costs.values(), Decimal(0))
        billed = pricing.with_markup(provider_cost, terms.markup_percent)
        for model, values in totals.items():
            values["cost_usd"] = plain(costs.get(model, Decimal(0)))  # exact, unrounded
        month = month_start().strftime("%Y-%m")
        if as_json:
            report = {
                "tenant": tenant,
                "month": month,
                "models": totals,
                "provider_cost_usd": plain(provider_cost),
                "markup_percent": plain(terms.markup_percent),
                "billed_usd": plain(billed),
            }
            self.stdout.write(json.dumps(report))
            return
        self.stdout.write(f"Usage of {tenant_row.name} ({tenant}) in {month}")
        if not totals:
            self.stdout.write("  no usage yet")
        for model, values in totals.items():
            self.stdout.write(
                f"  {model}: {values['responses']} usage events, cost ${values['cost_usd']}"
            )
            for name in (*TOKEN_FIELDS, "audio_ms"):
                if values[name]:
                    self.stdout.write(f"    {name:<22} {values[name]:>12,}")
        self.stdout.write(
            f"  provider cost ${pricing.cents(provider_cost)}, billed ${pricing.cents(billed)} "
            f"({terms.markup_percent:+}% plan markup; exact: ${plain(provider_cost)})"
        )
