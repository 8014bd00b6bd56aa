"""Reads over the usage ledger, the price book, tallies and invoices."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing import pricing
from billing.models import PriceBookEntry, TenantPlan, UsageEvent, UsageTally
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

TOKEN_FIELDS = (
    "input_text_tokens", "input_audio_tokens", "input_image_tokens",
    "cached_text_tokens", "cached_audio_tokens", "cached_image_tokens",
    "output_text_tokens", "output_audio_tokens",
)  # fmt: skip
COUNT_FIELDS = (*TOKEN_FIELDS, "audio_ms")


def month_start(moment: datetime | None = None) -> datetime:
    moment = timezone.localtime(moment or timezone.now(), UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_first_day(value: date) -> date:
    return value.replace(day=1)


def next_month(first_day: date) -> date:
    return (first_day.replace(day=28) + timedelta(days=4)).replace(day=1)


def day_start(day: date) -> datetime:
    """Billing days are UTC days."""
    return datetime.combine(day, time.min, tzinfo=UTC)


def utc_day(moment: datetime) -> date:
    return timezone.localtime(moment, UTC).date()


def counts_from_row(row: Any) -> pricing.TokenCounts:
    """Token counts of an event, a tally or an aggregate row (object or dict)."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    return pricing.TokenCounts(
        input_text=get("input_text_tokens") or 0,
        input_audio=get("input_audio_tokens") or 0,
        input_image=get("input_image_tokens") or 0,
        cached_text=get("cached_text_tokens") or 0,
        cached_audio=get("cached_audio_tokens") or 0,
        cached_image=get("cached_image_tokens") or 0,
        output_text=get("output_text_tokens") or 0,
        output_audio=get("output_audio_tokens") or 0,
        audio_ms=get("audio_ms") or 0,
    )


def event_counts(event: UsageEvent) -> pricing.TokenCounts:
    return counts_from_row(event)


# --- price book and plan ------------------------------------------------------------------


def price_book_load() -> pricing.PriceBook:
    """Every price version (a small, platform-wide table), with the seed behind it."""
    return pricing.PriceBook(entry.version() for entry in PriceBookEntry.objects.all())


def rates_for(
    *, model: str, provider_is_local: bool = False, day: date | None = None
) -> pricing.Rates:
    if provider_is_local:
        return pricing.LOCAL_ENGINE
    return price_book_load().rates_for(
        model=model, provider="openai", day=day or timezone.now().date()
    )


def safe_cost(
    book: pricing.PriceBook, *, model: str, provider: str, day: date, counts: pricing.TokenCounts
) -> Decimal:
    """Cost for display and caps: an unpriced model counts as zero (and says so in the log).

    Invoices do not use this: closing a month with an unpriced model fails loudly instead.
    """
    try:
        rates = book.rates_for(model=model, provider=provider, day=day)
    except pricing.MissingPrice:
        logger.warning("no price for model %s on %s: counted as zero", model, day)
        return Decimal(0)
    return pricing.cost(counts, rates)


@dataclass(frozen=True)
class PlanTerms:
    name: str
    markup_percent: Decimal


def plan_terms(*, tenant_id: int) -> PlanTerms:
    with tenant_scope(tenant_id):
        plan = TenantPlan.objects.first()
    if plan is None:
        return PlanTerms(name="Provider cost", markup_percent=Decimal(0))
    return PlanTerms(name=plan.name, markup_percent=plan.markup_percent)


# --- spend --------------------------------------------------------------------------------


def _events_cost(events: QuerySet, book: pricing.PriceBook) -> Decimal:
    """Provider cost of a set of events, aggregated in the database by model, provider and day."""
    rows = (
        events.annotate(day=TruncDate("occurred_at", tzinfo=UTC))
        .values("model", "provider", "day")
        .annotate(**{name: Sum(name) for name in COUNT_FIELDS})
        .order_by()
    )
    total = Decimal(0)
    for row in rows:
        total += safe_cost(
            book,
            model=row["model"],
            provider=row["provider"],
            day=row["day"],
            counts=counts_from_row(row),
        )
    return total


def tenant_month_spend(*, tenant_id: int, now: datetime | None = None) -> Decimal:
    """What the tenant's usage since the start of the (UTC) month is billed, unrounded.

    Provider cost under the tenant plan's markup: the figure its monthly budget is checked
    against.
    """
    book = price_book_load()
    terms = plan_terms(tenant_id=tenant_id)
    with tenant_scope(tenant_id):
        events = UsageEvent.objects.filter(occurred_at__gte=month_start(now))
        provider_cost = _events_cost(events, book)
    return pricing.with_markup(provider_cost, terms.markup_percent)


def tenant_day_spend(
    *,
    tenant_id: int,
    agent_id: int | None = None,
    widget_key_id: int | None = None,
    now: datetime | None = None,
) -> Decimal:
    """Billed spend of the current UTC day, of one agent or one widget key (unrounded)."""
    book = price_book_load()
    terms = plan_terms(tenant_id=tenant_id)
    today = utc_day(now or timezone.now())
    with tenant_scope(tenant_id):
        events = UsageEvent.objects.filter(occurred_at__gte=day_start(today))
        if agent_id is not None:
            events = events.filter(agent_id=agent_id)
        if widget_key_id is not None:
            events = events.filter(widget_key_id=widget_key_id)
        provider_cost = _events_cost(events, book)
    return pricing.with_markup(provider_cost, terms.markup_percent)


def tenant_month_token_totals(*, tenant_id: int, now: datetime | None = None) -> dict:
    """Token totals (and audio ms) per model and token type for the current month."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with tenant_scope(tenant_id):
        rows = UsageEvent.objects.filter(occurred_at__gte=month_start(now)).values(
            "model", *TOKEN_FIELDS, "audio_ms"
        )
        for row in rows.iterator():
            model_totals = totals[row["model"]]
            for name in (*TOKEN_FIELDS, "audio_ms"):
                model_totals[name] += row[name]
            model_totals["responses"] += 1
    return {model: dict(values) for model, values in sorted(totals.items())}


def tenant_month_costs(*, tenant_id: int, now: datetime | None = None) -> dict[str, Decimal]:
    """Provider cost per model for the current month (unrounded)."""
    book = price_book_load()
    costs: dict[str, Decimal] = defaultdict(Decimal)
    with tenant_scope(tenant_id):
        rows = (
            UsageEvent.objects.filter(occurred_at__gte=month_start(now))
            .annotate(day=TruncDate("occurred_at", tzinfo=UTC))
            .values("model", "provider", "day")
            .annotate(**{name: Sum(name) for name in COUNT_FIELDS})
            .order_by()
        )
        for row in rows:
            costs[row["model"]] += safe_cost(
                book,
                model=row["model"],
                provider=row["provider"],
                day=row["day"],
                counts=counts_from_row(row),
            )
    return dict(sorted(costs.items()))


def event_cost(event: UsageEvent, book: pricing.PriceBook | None = None) -> Decimal:
    """Provider cost of one usage event (unrounded), at the price in force on its day."""
    return safe_cost(
        book or price_book_load(),
        model=event.model,
        provider=event.provider,
        day=utc_day(event.occurred_at),
        counts=event_counts(event),
    )


def events_total_cost(events: Iterable[UsageEvent]) -> Decimal:
    """Provider cost of a few events (a session's), with one read of the price book."""
    book = price_book_load()
    return sum((event_cost(event, book) for event in events), Decimal(0))


def sessions_cost_from_events(*, session_ids: Iterable[int]) -> dict[int, Decimal]:
    """Provider cost of each session, from its events: one grouped query (by session, model,
    provider and day, each priced at its day's rates). Sessions without events are left out.
    Runs in the caller's scope (a tenant's, or the tally's bypass)."""
    book = price_book_load()
    rows = (
        UsageEvent.objects.filter(session_id__in=list(session_ids))
        .annotate(day=TruncDate("occurred_at", tzinfo=UTC))
        .values("session_id", "model", "provider", "day")
        .annotate(**{name: Sum(name) for name in COUNT_FIELDS})
        .order_by()
    )
    costs: dict[int, Decimal] = {}
    for row in rows:
        cost = safe_cost(
            book,
            model=row["model"],
            provider=row["provider"],
            day=row["day"],
            counts=counts_from_row(row),
        )
        costs[row["session_id"]] = costs.get(row["session_id"], Decimal(0)) + cost
    return costs


# --- usage page ---------------------------------------------------------------------------


@dataclass
class UsageRow:
    day: date
    agent_id: int | None
    agent_name: str
    model: str
    provider: str
    responses: int
    counts: pricing.TokenCounts
    cost: Decimal
    billed: Decimal

    @property
    def quantities(self) -> dict[str, Decimal]:
        """Billable quantities by token type: input excludes cached tokens (as invoiced)."""
        return pricing.billable_quantities(self.counts)


@dataclass
class UsageSummary:
    start: date
    end: date  # inclusive
    rows: list[UsageRow] = field(default_factory=list)
    cost: Decimal = Decimal(0)
    billed: Decimal = Decimal(0)
    markup_percent: Decimal = Decimal(0)
    by_day_and_model: dict[date, dict[str, Decimal]] = field(default_factory=dict)  # provider
    billed_by_day_and_model: dict[date, dict[str, Decimal]] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    # Billable quantities (``pricing.billable_quantities``): input excludes cached tokens.
    tokens_by_type: dict[str, Decimal] = field(default_factory=dict)
    # Of ``cost``/``billed``: the console's Try-it sessions (real upstream usage on the
    # tenant's key, billed like any session, but never widget usage).
    console_cost: Decimal = Decimal(0)
    console_billed: Decimal = Decimal(0)


CONSOLE_CHANNEL = "console"  # agents.models.Session.Channel.CONSOLE (billing imports no agents)


def usage_summary(*, tenant_id: int, start: date, end: date) -> UsageSummary:
    """Daily tallies of a date range (inclusive) with their cost, for the usage page."""
    book = price_book_load()
    terms = plan_terms(tenant_id=tenant_id)
    summary = UsageSummary(start=start, end=end, markup_percent=terms.markup_percent)
    with tenant_scope(tenant_id):
        tallies = list(
            UsageTally.objects.filter(day__gte=start, day__lte=end)
            .select_related("agent")
            .order_by("day", "model", "agent_id")
        )
    by_day: dict[date, dict[str, Decimal]] = {}
    tokens: dict[str, Decimal] = {token_type.code: Decimal(0) for token_type in pricing.TOKEN_TYPES}
    models: set[str] = set()
    for tally in tallies:
        counts = counts_from_row(tally)
        cost = safe_cost(
            book, model=tally.model, provider=tally.provider, day=tally.day, counts=counts
        )
        billed = pricing.with_markup(cost, terms.markup_percent)
        summary.rows.append(
            UsageRow(
                day=tally.day,
                agent_id=tally.agent_id,
                agent_name=tally.agent.name if tally.agent else "(deleted agent)",
                model=tally.model,
                provider=tally.provider,
                responses=tally.responses,
                counts=counts,
                cost=cost,
                billed=billed,
            )
        )
        summary.cost += cost
        summary.billed += billed
        models.add(tally.model)
        day_costs = by_day.setdefault(tally.day, {})
        day_costs[tally.model] = day_costs.get(tally.model, Decimal(0)) + cost
        for code, quantity in pricing.billable_quantities(counts).items():
            tokens[code] += quantity
    day = start
    while day <= end:
        summary.by_day_and_model[day] = by_day.get(day, {})
        summary.billed_by_day_and_model[day] = {
            model: pricing.with_markup(cost, terms.markup_percent)
            for model, cost in by_day.get(day, {}).items()
        }
        day += timedelta(days=1)
    summary.models = sorted(models)
    summary.tokens_by_type = tokens
    with tenant_scope(tenant_id):
        console = UsageEvent.objects.filter(
            session__channel=CONSOLE_CHANNEL,
            occurred_at__gte=day_start(start),
            occurred_at__lt=day_start(end + timedelta(days=1)),
        )
        summary.console_cost = _events_cost(console, book)
    summary.console_billed = pricing.with_markup(summary.console_cost, terms.markup_percent)
    return summary


def usage_events_for_export(*, start: datetime, end: datetime) -> Iterable[UsageEvent]:
    """Raw events of a range, oldest first, streamed (must run inside the tenant scope)."""
    return (
        UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        .order_by("occurred_at", "pk")
        .iterator(chunk_size=2000)
    )


# --- spend next to each cap ---------------------------------------------------------------


@dataclass
class SpendFigures:
    """Billed spend (unrounded) of the current UTC day and month."""

    today: Decimal = Decimal(0)
    month: Decimal = Decimal(0)


@dataclass
class CapSpend:
    tenant: SpendFigures = field(default_factory=SpendFigures)
    by_agent: dict[int, SpendFigures] = field(default_factory=dict)
    by_widget_key: dict[int, SpendFigures] = field(default_factory=dict)


def cap_spend(*, tenant_id: int, now: datetime | None = None) -> CapSpend:
    """The billed spend today and this month of the tenant, of each agent and of each widget
    key: what the monthly budget and the daily caps are checked against (``billing.spend``),
    from one grouped query over the month's events."""
    now = now or timezone.now()
    book = price_book_load()
    terms = plan_terms(tenant_id=tenant_id)
    today = utc_day(now)
    result = CapSpend()
    with tenant_scope(tenant_id):
        rows = (
            UsageEvent.objects.filter(occurred_at__gte=month_start(now))
            .annotate(day=TruncDate("occurred_at", tzinfo=UTC))
            .values("agent_id", "widget_key_id", "model", "provider", "day")
            .annotate(**{name: Sum(name) for name in COUNT_FIELDS})
            .order_by()
        )
        for row in rows:
            cost = safe_cost(
                book, model=row["model"], provider=row["provider"], day=row["day"],
                counts=counts_from_row(row),
            )  # fmt: skip
            billed = pricing.with_markup(cost, terms.markup_percent)
            figures = [result.tenant]
            if row["agent_id"] is not None:
                figures.append(result.by_agent.setdefault(row["agent_id"], SpendFigures()))
            if row["widget_key_id"] is not None:
                key = row["widget_key_id"]
                figures.append(result.by_widget_key.setdefault(key, SpendFigures()))
            for figure in figures:
                figure.month += billed
                if row["day"] == today:
                    figure.today += billed
    return result
