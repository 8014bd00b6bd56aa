"""How an invoice is priced and shown: one computation for the month-to-date draft and the close.

``invoice_lines_compute`` turns a set of usage events into invoice lines; the close
(``services.invoice_close_month``) stores what it returns for the events it links, and the draft
(``invoice_draft``) shows what it returns for the events the close would link if it ran now.
So the draft and the closed invoice cannot price differently.

The customer sees billed amounts only: ``customer_sections`` groups the lines under one heading
per agent and model, folds lines billed $0.00, and gives unit prices under the plan's markup.
Provider cost and margin stay in the staff views (the admin and its CSV).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing import pricing
from billing.models import (
    REVERSE_CHARGE_NOTE,
    CurrencyDisplay,
    Invoice,
    InvoiceLine,
    IssuerProfile,
    TaxMode,
    TenantBillingProfile,
    UsageEvent,
)
from billing.selectors import (
    COUNT_FIELDS,
    counts_from_row,
    day_start,
    month_first_day,
    plan_terms,
    price_book_load,
    utc_day,
)
from tenants.models import Tenant
from tenants.scoping import tenant_scope

# --- profiles -------------------------------------------------------------------------------


def issuer_profile_get() -> IssuerProfile:
    """The platform operator's profile (the first row), created from ``VP_ISSUER_*`` if none.

    Created with a fixed primary key: concurrent first closes must not each create an issuer
    (and each start a series at 1); ``get_or_create`` lets one insert win and the others read it.
    """
    issuer = IssuerProfile.objects.order_by("pk").first()
    if issuer is None:
        issuer, _ = IssuerProfile.objects.get_or_create(
            pk=1,
            defaults={
                "legal_name": settings.VP_ISSUER_LEGAL_NAME,
                "address": settings.VP_ISSUER_ADDRESS,
                "tax_id": settings.VP_ISSUER_TAX_ID,
                "email": settings.VP_ISSUER_EMAIL,
                "payment_details": settings.VP_ISSUER_PAYMENT_DETAILS,
                "invoice_prefix": settings.VP_ISSUER_INVOICE_PREFIX,
                "credit_note_prefix": settings.VP_ISSUER_CREDIT_NOTE_PREFIX,
            },
        )
    return issuer


def tenant_billing_profile(*, tenant_id: int) -> TenantBillingProfile:
    """The tenant's profile, or an unsaved one with the defaults (nothing is written)."""
    with tenant_scope(tenant_id):
        profile = TenantBillingProfile.objects.first()
    return profile or TenantBillingProfile(tenant_id=tenant_id)


def buyer_snapshot(*, tenant: Tenant, profile: TenantBillingProfile) -> dict[str, str]:
    return {
        "legal_name": profile.legal_name or tenant.name,
        "address": profile.address,
        "tax_id": profile.tax_id,
        "email": profile.billing_email,
        "account": tenant.slug,
    }


# --- money ----------------------------------------------------------------------------------


def money(amount: Decimal, style: str = CurrencyDisplay.SYMBOL) -> str:
    """``$1,234.50`` or ``USD 1,234.50`` (negative: ``-$1.00``); always US dollars."""
    sign = "-" if amount < 0 else ""
    figure = f"{abs(amount):,.2f}"
    return f"{sign}USD {figure}" if style == CurrencyDisplay.CODE else f"{sign}${figure}"


@dataclass(frozen=True)
class TaxTerms:
    mode: str
    rate_percent: Decimal
    note: str

    @property
    def label(self) -> str:
        if self.mode == TaxMode.REVERSE_CHARGE:
            return "Tax (reverse charge)"
        return f"Tax ({self.rate_percent.normalize():f}%)"


def tax_terms(profile: TenantBillingProfile) -> TaxTerms:
    if profile.tax_mode == TaxMode.REVERSE_CHARGE:
        return TaxTerms(TaxMode.REVERSE_CHARGE, Decimal(0), profile.tax_note or REVERSE_CHARGE_NOTE)
    return TaxTerms(TaxMode.RATE, Decimal(profile.tax_rate_percent), profile.tax_note)


def tax_of(subtotal: Decimal, terms: TaxTerms) -> Decimal:
    """Tax on a subtotal, once per document, rounded half-up to the cent."""
    return pricing.cents(subtotal * terms.rate_percent / Decimal(100))


@dataclass(frozen=True)
class Totals:
    provider_total: Decimal
    subtotal: Decimal
    tax_total: Decimal
    total: Decimal


def totals_of(lines: list[InvoiceLine], terms: TaxTerms) -> Totals:
    provider = sum((line.amount for line in lines), Decimal(0))
    subtotal = sum((line.billed_amount for line in lines), Decimal(0))
    tax = tax_of(subtotal, terms)
    return Totals(provider, subtotal, tax, subtotal + tax)


# --- lines ----------------------------------------------------------------------------------


@dataclass
class _LineTotal:
    quantity: Decimal
    unit_price: Decimal
    price_effective_from: date | None


def invoice_lines_compute(
    *, tenant_id: int, month: date, markup_percent: Decimal, events: QuerySet
) -> list[InvoiceLine]:
    """Unsaved lines (no invoice yet) per usage month, agent, model, provider, price version,
    kind and token type, in their order on the invoice. Raises ``MissingPrice`` for an unpriced
    model rather than bill it as zero.

    Post-call analysis is its own line ("… · gpt-5-mini · Post-call analysis · Text input"),
    even on a model that also served something else. Usage of an earlier month is an adjustment.
    """
    book = price_book_load()
    rows = (
        events.annotate(day=TruncDate("occurred_at", tzinfo=UTC))
        .values("agent_id", "agent__name", "model", "provider", "kind", "day")
        .annotate(**{name: Sum(name) for name in COUNT_FIELDS})
        .order_by()
    )
    totals: dict[tuple, _LineTotal] = {}
    names: dict[int, str] = {}
    for row in rows:
        if row["agent_id"] is not None:
            names[row["agent_id"]] = row["agent__name"]
        rates = book.rates_for(model=row["model"], provider=row["provider"], day=row["day"])
        effective_from = (
            None
            if row["provider"] == pricing.PROVIDER_LOCAL
            else book.version_for(model=row["model"], day=row["day"]).effective_from
        )
        quantities = pricing.billable_quantities(counts_from_row(row))
        for token_type in pricing.TOKEN_TYPES:
            quantity = quantities[token_type.code]
            if not quantity:
                continue
            key = (
                month_first_day(row["day"]),
                row["agent_id"],
                row["model"],
                row["provider"],
                effective_from,
                row["kind"] == UsageEvent.Kind.ANALYSIS,
                token_type.code,
            )
            line = totals.get(key)
            if line is None:
                unit_price = getattr(rates, token_type.rate_field)
                totals[key] = _LineTotal(quantity, unit_price, effective_from)
            else:
                line.quantity += quantity

    def order(key: tuple) -> tuple:
        usage_month, agent_id, model, provider, effective_from, analysis, code = key
        type_index = list(pricing.TOKEN_TYPES_BY_CODE).index(code)
        adjustment = usage_month != month
        # An agent's analysis lines come after its conversation lines.
        return (adjustment, usage_month, names.get(agent_id, ""), agent_id or 0, analysis,
                model, provider, effective_from or date.min, type_index)  # fmt: skip

    lines = []
    for position, key in enumerate(sorted(totals, key=order), start=1):
        usage_month, agent_id, model, provider, effective_from, analysis, code = key
        total = totals[key]
        token_type = pricing.TOKEN_TYPES_BY_CODE[code]
        exact = pricing.line_cost(token_type, total.quantity, total.unit_price)
        agent_name = names.get(agent_id, "(deleted agent)") if agent_id else "(no agent)"
        adjustment = usage_month != month
        purpose = f"{UsageEvent.Kind.ANALYSIS.label} · " if analysis else ""
        description = f"{agent_name} · {model} · {purpose}{token_type.label}"
        if provider == pricing.PROVIDER_LOCAL:
            description += " (local engine)"
        if adjustment:
            description = f"Adjustment for {usage_month:%Y-%m}: {description}"
        lines.append(
            InvoiceLine(
                tenant_id=tenant_id,
                position=position,
                is_adjustment=adjustment,
                is_analysis=analysis,
                usage_month=usage_month,
                agent_id=agent_id,
                agent_name=agent_name,
                model=model,
                provider=provider,
                token_type=code,
                description=description[:200],
                quantity=total.quantity,
                quantity_unit=token_type.unit,
                unit_price=total.unit_price,
                price_unit=token_type.price_unit,
                price_effective_from=effective_from,
                amount=pricing.cents(exact),
                billed_amount=pricing.cents(pricing.with_markup(exact, markup_percent)),
            )
        )
    return lines


# --- the month-to-date draft ----------------------------------------------------------------


def draft_events(*, now: datetime) -> QuerySet:
    """The events the close of the current month would bill if it ran now (in a tenant scope).

    Usage of earlier months not invoiced yet goes to the previous month's invoice while that
    is not issued (the first hour of a month), so it shows on this draft only after that.
    """
    month = month_first_day(utc_day(now))
    previous = month_first_day(month - timedelta(days=1))
    events = UsageEvent.objects.filter(invoice__isnull=True, occurred_at__lt=now)
    previous_issued = Invoice.objects.filter(month=previous).exclude(status=Invoice.Status.DRAFT)
    if not previous_issued.exists():
        events = events.filter(occurred_at__gte=day_start(month))
    return events


@dataclass
class InvoiceDraft:
    """What the current month's invoice would be if the month closed now (never stored)."""

    month: date
    as_of: datetime
    lines: list[InvoiceLine]
    totals: Totals
    tax: TaxTerms
    markup_percent: Decimal
    currency_display: str
    event_count: int
    sections: list[CustomerSection] = field(default_factory=list)


def invoice_draft(*, tenant_id: int, now: datetime | None = None) -> InvoiceDraft:
    """The month to date, priced by the same code as the close (raises ``MissingPrice``)."""
    now = now or timezone.now()
    month = month_first_day(utc_day(now))
    terms = plan_terms(tenant_id=tenant_id)
    profile = tenant_billing_profile(tenant_id=tenant_id)
    tax = tax_terms(profile)
    with tenant_scope(tenant_id):
        events = draft_events(now=now)
        lines = invoice_lines_compute(
            tenant_id=tenant_id, month=month, markup_percent=terms.markup_percent, events=events
        )
        event_count = events.count()
    draft = InvoiceDraft(
        month=month,
        as_of=now,
        lines=lines,
        totals=totals_of(lines, tax),
        tax=tax,
        markup_percent=terms.markup_percent,
        currency_display=profile.currency_display,
        event_count=event_count,
    )
    draft.sections = customer_sections(lines, markup_percent=terms.markup_percent)
    return draft


# --- the customer's view --------------------------------------------------------------------


@dataclass
class CustomerRow:
    label: str
    quantity: Decimal
    quantity_unit: str
    unit_price: Decimal  # under the plan's markup
    price_unit: str
    amount: Decimal


@dataclass
class CustomerSection:
    heading: str
    rows: list[CustomerRow] = field(default_factory=list)
    is_adjustment: bool = False

    @property
    def amount(self) -> Decimal:
        return sum((row.amount for row in self.rows), Decimal(0))


@dataclass
class FoldedLines:
    count: int = 0
    amount: Decimal = Decimal(0)


def customer_sections(
    lines: list[InvoiceLine], *, markup_percent: Decimal
) -> list[CustomerSection]:
    """Lines under one heading per (adjustment month,) agent and model, in invoice order.

    Lines billed $0.00 are left out here: ``folded_lines`` counts them for one summary row.
    """
    sections: dict[tuple, CustomerSection] = {}
    for line in lines:
        if not line.billed_amount:
            continue
        key = (line.is_adjustment, line.usage_month, line.agent_id, line.agent_name, line.model)
        section = sections.get(key)
        if section is None:
            heading = f"{line.agent_name} · {line.model}"
            if line.is_adjustment:
                heading = f"Adjustment for {line.usage_month:%Y-%m}: {heading}"
            section = sections[key] = CustomerSection(heading, is_adjustment=line.is_adjustment)
        label = line.description.split(f"{line.agent_name} · {line.model} · ", 1)[-1]
        section.rows.append(
            CustomerRow(
                label=label,
                quantity=line.quantity,
                quantity_unit=line.quantity_unit,
                unit_price=pricing.with_markup(line.unit_price, markup_percent).normalize(),
                price_unit=line.price_unit,
                amount=line.billed_amount,
            )
        )
    return list(sections.values())


def folded_lines(lines: list[InvoiceLine]) -> FoldedLines:
    zero = [line for line in lines if not line.billed_amount]
    return FoldedLines(count=len(zero), amount=Decimal(0))


# --- balances -------------------------------------------------------------------------------


@dataclass
class Balance:
    invoiced: Decimal = Decimal(0)
    credited: Decimal = Decimal(0)
    paid: Decimal = Decimal(0)

    @property
    def balance(self) -> Decimal:
        return self.invoiced - self.credited - self.paid


def invoice_balance(invoice: Invoice, credited: Decimal) -> Decimal:
    """What is still owed on one invoice: nothing once void; negative when over-credited."""
    if invoice.status in (Invoice.Status.VOID, Invoice.Status.DRAFT):
        return Decimal(0)
    return invoice.total - credited - invoice.amount_paid


def balances_of(invoices: list[Invoice], credited: dict[int, Decimal]) -> Balance:
    """Invoiced − credited − paid over the issued invoices that are not void."""
    balance = Balance()
    for invoice in invoices:
        if invoice.status in (Invoice.Status.VOID, Invoice.Status.DRAFT):
            continue
        balance.invoiced += invoice.total
        balance.credited += credited.get(invoice.pk, Decimal(0))
        balance.paid += invoice.amount_paid
    return balance
