"""Writes: the usage ledger, daily tallies, invoices, spend caps."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing import pricing
from billing.budgets import budget_alerts_check
from billing.models import (
    BillingLock,
    Invoice,
    InvoiceLine,
    SessionCost,
    SpendCap,
    UsageEvent,
    UsageTally,
)
from billing.selectors import (
    COUNT_FIELDS,
    counts_from_row,
    day_start,
    month_first_day,
    next_month,
    plan_terms,
    price_book_load,
    sessions_cost_from_events,
)
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

logger = logging.getLogger(__name__)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def usage_counts_from_response(usage: dict[str, Any]) -> dict[str, int]:
    """Token counts of a ``response.done`` usage object, by modality, cached separately."""
    details = usage.get("input_token_details") or {}
    cached = details.get("cached_tokens_details") or {}
    output = usage.get("output_token_details") or {}
    counts = {
        "input_text_tokens": _int(details.get("text_tokens")),
        "input_audio_tokens": _int(details.get("audio_tokens")),
        "input_image_tokens": _int(details.get("image_tokens")),
        "cached_text_tokens": _int(cached.get("text_tokens")),
        "cached_audio_tokens": _int(cached.get("audio_tokens")),
        "cached_image_tokens": _int(cached.get("image_tokens")),
        "output_text_tokens": _int(output.get("text_tokens")),
        "output_audio_tokens": _int(output.get("audio_tokens")),
    }
    if not details and _int(usage.get("input_tokens")):
        counts["input_text_tokens"] = _int(usage.get("input_tokens"))
    if not output and _int(usage.get("output_tokens")):
        counts["output_text_tokens"] = _int(usage.get("output_tokens"))
    # Cached tokens are a subset of the input: never let a malformed report make them exceed it.
    for modality in ("text", "audio", "image"):
        counts[f"cached_{modality}_tokens"] = min(
            counts[f"cached_{modality}_tokens"], counts[f"input_{modality}_tokens"]
        )
    return counts


def token_counts_from_response(usage: dict[str, Any], *, audio_ms: int = 0) -> pricing.TokenCounts:
    return counts_from_row({**usage_counts_from_response(usage), "audio_ms": audio_ms})


def usage_event_record(
    *,
    tenant_id: int,
    session_id: int | None,
    agent_id: int | None,
    provider: str,
    model: str,
    key: str,
    status: str,
    usage: dict[str, Any],
    audio_ms: int,
    occurred_at: datetime,
    widget_key_id: int | None = None,
    kind: str | None = None,
) -> bool:
    """Append one usage event; a key seen before changes nothing. True when written.

    ``kind`` (``UsageEvent.Kind``) defaults to what the record looks like: metered audio when
    it carries audio milliseconds and no tokens, else a realtime response.
    """
    counts = usage_counts_from_response(usage)
    if kind is None:
        metered = audio_ms > 0 and not any(counts.values())
        kind = UsageEvent.Kind.MINUTES if metered else UsageEvent.Kind.REALTIME
    with tenant_scope(tenant_id):
        if UsageEvent.objects.filter(upstream_response_id=key).exists():
            return False
        try:
            with transaction.atomic():
                UsageEvent.objects.create(
                    tenant_id=tenant_id,
                    session_id=session_id,
                    agent_id=agent_id,
                    widget_key_id=widget_key_id,
                    provider=provider,
                    kind=kind,
                    model=model,
                    upstream_response_id=key,
                    status=status,
                    audio_ms=audio_ms,
                    occurred_at=occurred_at,
                    **counts,
                )
        except IntegrityError:  # written concurrently by a retry: exactly once still holds
            return False
    return True


# --- locks --------------------------------------------------------------------------------


def _lock(*, tenant_id: int, purpose: str) -> None:
    """Serialise writers of one tenant and purpose until the transaction ends (call inside it)."""
    BillingLock.objects.get_or_create(tenant_id=tenant_id, purpose=purpose)
    BillingLock.objects.select_for_update().get(tenant_id=tenant_id, purpose=purpose)


# --- tallies ------------------------------------------------------------------------------


def tally_recompute_day(*, tenant_id: int, day: date, every_session: bool = False) -> int:
    """Rebuild a tenant's daily totals of one UTC day from its events. Returns rows written.

    The cost of the sessions with new events is stored too (``SessionCost``); ``every_session``
    recomputes that of every session with events on the day (a rebuild).

    Idempotent and safe with concurrent workers: totals are recomputed from the ledger, never
    incremented, under a per-tenant lock, so two runs (or two workers) write the same rows.
    Events are marked tallied before the totals are read: an event committed in between is in
    the totals and still unmarked, so the sweep merely recomputes the day once more.
    """
    now = timezone.now()
    start, end = day_start(day), day_start(day + timedelta(days=1))
    with tenant_scope(tenant_id), transaction.atomic():
        _lock(tenant_id=tenant_id, purpose="tally")
        events = UsageEvent.objects.filter(occurred_at__gte=start, occurred_at__lt=end)
        # The sessions whose cost moved: those with new events (all of the day's on a rebuild).
        costed = events if every_session else events.filter(tallied_at__isnull=True)
        session_ids = set(
            costed.filter(session__isnull=False).values_list("session_id", flat=True).distinct()
        )
        events.filter(tallied_at__isnull=True).update(tallied_at=now)
        rows = (
            events.values("agent_id", "model", "provider")
            .annotate(responses=Count("pk"), **{name: Sum(name) for name in COUNT_FIELDS})
            .order_by("agent_id", "model", "provider")
        )
        tallies = [
            UsageTally(
                tenant_id=tenant_id,
                day=day,
                agent_id=row["agent_id"],
                model=row["model"],
                provider=row["provider"],
                responses=row["responses"],
                computed_at=now,
                **{name: row[name] or 0 for name in COUNT_FIELDS},
            )
            for row in rows
        ]
        UsageTally.objects.filter(day=day).delete()
        UsageTally.objects.bulk_create(tallies)
        session_costs_recompute(tenant_id=tenant_id, session_ids=session_ids, now=now)
    return len(tallies)


def session_costs_recompute(
    *, tenant_id: int, session_ids: set[int], now: datetime | None = None
) -> None:
    """Store the provider cost of these sessions, from all their events (a session may span
    days). Derived like the tallies: recomputed, never incremented, so a second run agrees."""
    if not session_ids:
        return
    now = now or timezone.now()
    with tenant_scope(tenant_id):
        costs = sessions_cost_from_events(session_ids=session_ids)
        SessionCost.objects.bulk_create(
            [
                SessionCost(
                    tenant_id=tenant_id,
                    session_id=session_id,
                    cost_usd=costs.get(session_id, Decimal(0)),
                    computed_at=now,
                )
                for session_id in sorted(session_ids)
            ],
            update_conflicts=True,
            unique_fields=["session"],
            update_fields=["cost_usd", "computed_at"],
        )


def tally_session(*, session_id: int) -> int:
    """Recompute the days a session's usage fell on (soon after the session ends)."""
    with scopes_disabled():  # the task knows only the session id; its events name the tenant
        pairs = list(
            UsageEvent.objects.filter(session_id=session_id)
            .annotate(day=TruncDate("occurred_at", tzinfo=UTC))
            .values_list("tenant_id", "day")
            .distinct()
        )
    for tenant_id, day in pairs:
        tally_recompute_day(tenant_id=tenant_id, day=day)
    budget_alerts_after_tally({tenant_id for tenant_id, _ in pairs})
    return len(pairs)


def budget_alerts_after_tally(tenant_ids: set[int]) -> None:
    """Check the monthly budget alerts of the tenants whose usage was just tallied: off the
    audio path, within a minute of the spend. A failure here never fails the tally (the next
    tally checks again)."""
    for tenant_id in sorted(tenant_ids):
        try:
            budget_alerts_check(tenant_id=tenant_id)
        except Exception:
            logger.exception("could not check the budget alerts of tenant %s", tenant_id)


def tally_sweep(*, limit: int = 500) -> int:
    """Recompute every (tenant, day) that has events not yet tallied (beat, every minute)."""
    with scopes_disabled():  # a platform-wide sweep
        pairs = list(
            UsageEvent.objects.filter(tallied_at__isnull=True)
            .annotate(day=TruncDate("occurred_at", tzinfo=UTC))
            .values_list("tenant_id", "day")
            .distinct()
            .order_by("day", "tenant_id")[:limit]
        )
    for tenant_id, day in pairs:
        tally_recompute_day(tenant_id=tenant_id, day=day)
    budget_alerts_after_tally({tenant_id for tenant_id, _ in pairs})
    return len(pairs)


def tally_rebuild(*, tenant_id: int, start: date, end: date) -> int:
    """Recompute every day of a range (inclusive) from the ledger; days without events empty."""
    day, days = start, 0
    while day <= end:
        tally_recompute_day(tenant_id=tenant_id, day=day, every_session=True)
        day += timedelta(days=1)
        days += 1
    return days


# --- invoices -----------------------------------------------------------------------------


# The beat waits this long after a month ends before closing it, so that responses finished just
# before midnight are written first. Anything later still lands, on the next invoice.
CLOSE_GRACE = timedelta(hours=1)


class MonthNotOver(ValueError):
    """A month can only be closed once it has ended."""


@dataclass
class _LineTotal:
    quantity: Decimal
    unit_price: Decimal
    price_effective_from: date | None


def invoice_number(*, tenant: Tenant, month: date) -> str:
    return f"{tenant.slug.upper()}-{month:%Y-%m}"


def invoice_close_month(
    *, tenant_id: int, month: date, now: datetime | None = None
) -> Invoice | None:
    """Close a tenant's month into an issued invoice; once issued, running it again is a no-op.

    The invoice bills every event of the tenant that occurred before the end of ``month`` and
    is on no invoice yet: the month's own usage, and as adjustment lines, usage of earlier
    months recorded after their invoice was issued. The events are linked to the invoice in
    the same transaction, so none is billed twice or skipped. Returns None when there is
    nothing to bill. Raises ``MissingPrice`` rather than bill an unpriced model as zero.
    """
    month = month_first_day(month)
    period_end = day_start(next_month(month))
    if period_end > (now or timezone.now()):
        raise MonthNotOver(f"{month:%Y-%m} is not over yet")
    tenant = Tenant.objects.get(pk=tenant_id)
    with tenant_scope(tenant_id), transaction.atomic():
        _lock(tenant_id=tenant_id, purpose="invoice")
        invoice = Invoice.objects.filter(month=month).first()
        if invoice is not None and invoice.is_issued:
            return invoice
        pending = UsageEvent.objects.filter(invoice__isnull=True, occurred_at__lt=period_end)
        if invoice is None:
            if not pending.exists():
                return None
            terms = plan_terms(tenant_id=tenant_id)
            invoice = Invoice.objects.create(
                tenant_id=tenant_id,
                month=month,
                number=invoice_number(tenant=tenant, month=month),
                plan_name=terms.name,
                markup_percent=terms.markup_percent,
            )
        else:  # a draft left behind: start it over
            invoice.lines.all().delete()
            UsageEvent.objects.filter(invoice=invoice).update(invoice=None)
        linked = pending.update(invoice=invoice)
        lines = _invoice_lines(invoice=invoice)
        InvoiceLine.objects.bulk_create(lines)
        invoice.provider_total = sum((line.amount for line in lines), Decimal(0))
        invoice.billed_total = sum((line.billed_amount for line in lines), Decimal(0))
        invoice.event_count = linked
        invoice.status = Invoice.Status.ISSUED
        invoice.issued_at = timezone.now()
        invoice.save()
    return invoice


def _invoice_lines(*, invoice: Invoice) -> list[InvoiceLine]:
    """Lines per usage month, agent, model, provider, price version, kind and token type.

    Post-call analysis is its own line ("… · gpt-5-mini · Post-call analysis · Text input"),
    even on a model that also served something else.
    """
    book = price_book_load()
    rows = (
        UsageEvent.objects.filter(invoice=invoice)
        .annotate(day=TruncDate("occurred_at", tzinfo=UTC))
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
    lines = []

    def order(key: tuple) -> tuple:
        usage_month, agent_id, model, provider, effective_from, analysis, code = key
        type_index = list(pricing.TOKEN_TYPES_BY_CODE).index(code)
        adjustment = usage_month != invoice.month
        # An agent's analysis lines come after its conversation lines.
        return (adjustment, usage_month, names.get(agent_id, ""), agent_id or 0, analysis,
                model, provider, effective_from or date.min, type_index)  # fmt: skip

    for position, key in enumerate(sorted(totals, key=order), start=1):
        usage_month, agent_id, model, provider, effective_from, analysis, code = key
        total = totals[key]
        token_type = pricing.TOKEN_TYPES_BY_CODE[code]
        exact = pricing.line_cost(token_type, total.quantity, total.unit_price)
        agent_name = names.get(agent_id, "(deleted agent)") if agent_id else "(no agent)"
        adjustment = usage_month != invoice.month
        purpose = f"{UsageEvent.Kind.ANALYSIS.label} · " if analysis else ""
        description = f"{agent_name} · {model} · {purpose}{token_type.label}"
        if provider == pricing.PROVIDER_LOCAL:
            description += " (local engine)"
        if adjustment:
            description = f"Adjustment for {usage_month:%Y-%m}: {description}"
        lines.append(
            InvoiceLine(
                tenant_id=invoice.tenant_id,
                invoice=invoice,
                position=position,
                is_adjustment=adjustment,
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
                billed_amount=pricing.cents(pricing.with_markup(exact, invoice.markup_percent)),
            )
        )
    return lines


def invoices_close_previous_month(*, now: datetime | None = None) -> dict[str, int]:
    """Close last month for every tenant with usage not yet invoiced (beat; idempotent).

    Each tenant closes in its own transaction; one tenant's failure (say, an unpriced model) is
    logged and retried on the next run without holding up the others.
    """
    now = now or timezone.now()
    this_month = timezone.localtime(now, UTC).date().replace(day=1)
    previous = month_first_day(this_month - timedelta(days=1))
    if now < day_start(this_month) + CLOSE_GRACE:
        return {"closed": 0, "failed": 0}  # let the last responses of the month be recorded
    with scopes_disabled():  # a platform-wide sweep over tenants
        tenant_ids = list(
            UsageEvent.objects.filter(invoice__isnull=True, occurred_at__lt=day_start(this_month))
            .values_list("tenant_id", flat=True)
            .distinct()
            .order_by("tenant_id")
        )
    result = {"closed": 0, "failed": 0}
    for tenant_id in tenant_ids:
        try:
            invoice_close_month(tenant_id=tenant_id, month=previous, now=now)
            result["closed"] += 1
        except Exception:
            logger.exception("could not close %s for tenant %s", previous, tenant_id)
            result["failed"] += 1
    return result


# --- spend caps ---------------------------------------------------------------------------


def spend_cap_set(
    *,
    tenant_id: int,
    daily_limit_usd: Decimal | None,
    agent_id: int | None = None,
    widget_key_id: int | None = None,
) -> SpendCap | None:
    """Set (or, with None, remove) the daily cap of one agent or one widget key."""
    if (agent_id is None) == (widget_key_id is None):
        raise ValueError("a spend cap is for one agent or one widget key")
    target = {"agent_id": agent_id} if agent_id is not None else {"widget_key_id": widget_key_id}
    with tenant_scope(tenant_id), transaction.atomic():
        if daily_limit_usd is None:
            SpendCap.objects.filter(**target).delete()
            return None
        cap, _ = SpendCap.objects.update_or_create(
            **target, defaults={"tenant_id": tenant_id, "daily_limit_usd": daily_limit_usd}
        )
    return cap
