"""Writes: the usage ledger, daily tallies, invoices, spend caps."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from billing import invoicing, pricing
from billing.budgets import budget_alerts_check
from billing.models import (
    BillingLock,
    CreditNote,
    DocumentCounter,
    Invoice,
    InvoiceLine,
    IssuerProfile,
    SessionCost,
    SpendCap,
    TenantBillingProfile,
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
    sessions_cost_from_events,
    utc_day,
)
from tenants.audit import audit_record
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


def _next_number(*, issuer: IssuerProfile, series: str) -> int:
    """The next number of an issuer's series, in the caller's transaction (gapless: a rollback
    gives the number back, and the row lock makes concurrent issuers take turns)."""
    DocumentCounter.objects.get_or_create(issuer=issuer, series=series)
    counter = DocumentCounter.objects.select_for_update().get(issuer=issuer, series=series)
    counter.last_number += 1
    counter.save(update_fields=["last_number"])
    return counter.last_number


def invoice_close_month(
    *, tenant_id: int, month: date, now: datetime | None = None
) -> Invoice | None:
    """Close a tenant's month into an issued invoice; once issued, running it again is a no-op.

    The invoice bills every event of the tenant that occurred before the end of ``month`` and
    is on no invoice yet: the month's own usage, and as adjustment lines, usage of earlier
    months recorded after their invoice was issued. The events are linked to the invoice in
    the same transaction, so none is billed twice or skipped. Lines come from
    ``invoicing.invoice_lines_compute``, as the month-to-date draft's do.

    Issuing takes the next number of the issuer's invoice series (a locked counter row, so
    concurrent closes of several tenants get gapless, unique numbers), dates it (due after the
    tenant's payment terms), taxes it on the tenant's terms and copies both parties' details.
    Returns None when there is nothing to bill. Raises ``MissingPrice`` rather than bill an
    unpriced model as zero.
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
                plan_name=terms.name,
                markup_percent=terms.markup_percent,
            )
        else:  # a draft left behind: start it over
            invoice.lines.all().delete()
            UsageEvent.objects.filter(invoice=invoice).update(invoice=None)
        linked = pending.update(invoice=invoice)
        lines = invoicing.invoice_lines_compute(
            tenant_id=tenant_id,
            month=month,
            markup_percent=invoice.markup_percent,
            events=UsageEvent.objects.filter(invoice=invoice),
        )
        for line in lines:
            line.invoice = invoice
        InvoiceLine.objects.bulk_create(lines)
        profile = invoicing.tenant_billing_profile(tenant_id=tenant_id)
        tax = invoicing.tax_terms(profile)
        totals = invoicing.totals_of(lines, tax)
        invoice.provider_total = totals.provider_total
        invoice.billed_total = totals.subtotal
        invoice.tax_mode, invoice.tax_rate_percent, invoice.tax_note = (
            tax.mode,
            tax.rate_percent,
            tax.note,
        )
        invoice.tax_total = totals.tax_total
        invoice.total = totals.total
        invoice.currency_display = profile.currency_display
        invoice.buyer = invoicing.buyer_snapshot(tenant=tenant, profile=profile)
        invoice.event_count = linked
        # Numbered last, just before the commit: the counter's row stays locked only briefly.
        issuer = invoicing.issuer_profile_get()
        invoice.issuer = issuer
        invoice.seller = issuer.snapshot()
        invoice.sequence = _next_number(issuer=issuer, series=DocumentCounter.Series.INVOICE)
        invoice.number = f"{issuer.invoice_prefix}{invoice.sequence:06d}"
        invoice.issued_at = timezone.now()
        invoice.issue_date = utc_day(invoice.issued_at)
        invoice.due_date = invoice.issue_date + timedelta(days=profile.payment_terms_days)
        invoice.status = Invoice.Status.OPEN
        invoice.save()
        audit_record(
            tenant=tenant_id,
            actor=None,
            action="invoice.issued",
            target=invoice,
            changes={"total": str(invoice.total), "due_date": str(invoice.due_date)},
        )
    return invoice


class InvoiceStateError(ValueError):
    """The invoice is not in a state that allows this (say, paying a void invoice)."""


def _invoice_for_update(invoice_id: int) -> Invoice:
    with scopes_disabled():  # staff actions name the invoice; its row names the tenant
        return Invoice.objects.select_for_update().get(pk=invoice_id)


def _credited(invoice: Invoice) -> tuple[Decimal, Decimal]:
    """Subtotal and total credited on an invoice so far."""
    sums = CreditNote.objects.filter(invoice=invoice).aggregate(
        subtotal=Sum("subtotal"), total=Sum("total")
    )
    return sums["subtotal"] or Decimal(0), sums["total"] or Decimal(0)


def invoice_mark_paid(
    *, invoice_id: int, actor: AbstractBaseUser | None, paid_at: datetime | None = None
) -> Invoice:
    """Open → paid: the balance left after credit notes is recorded as paid (audit-logged)."""
    with transaction.atomic():
        invoice = _invoice_for_update(invoice_id)
        if invoice.status != Invoice.Status.OPEN:
            raise InvoiceStateError(f"{invoice} is {invoice.status}: only open invoices are paid")
        with tenant_scope(invoice.tenant_id):
            _, credited = _credited(invoice)
            invoice.status = Invoice.Status.PAID
            invoice.paid_at = paid_at or timezone.now()
            invoice.amount_paid = pricing.cents(max(invoice.total - credited, Decimal(0)))
            invoice.save(update_fields=["status", "paid_at", "amount_paid"])
            audit_record(
                tenant=invoice.tenant_id,
                actor=actor,
                action="invoice.paid",
                target=invoice,
                changes={
                    "status": {"from": Invoice.Status.OPEN, "to": Invoice.Status.PAID},
                    "amount_paid": str(invoice.amount_paid),
                    "paid_at": invoice.paid_at.isoformat(),
                },
            )
    return invoice


def invoice_void(*, invoice_id: int, actor: AbstractBaseUser | None, reason: str) -> Invoice:
    """Open → void: nothing is owed on it any more. Its usage stays linked to it (billed
    neither again nor elsewhere); invoices with credit notes are corrected by more credit
    notes instead. Audit-logged with the reason."""
    reason = reason.strip()
    if not reason:
        raise InvoiceStateError("say why the invoice is void")
    with transaction.atomic():
        invoice = _invoice_for_update(invoice_id)
        if invoice.status != Invoice.Status.OPEN:
            raise InvoiceStateError(f"{invoice} is {invoice.status}: only open invoices are voided")
        with tenant_scope(invoice.tenant_id):
            if CreditNote.objects.filter(invoice=invoice).exists():
                raise InvoiceStateError(f"{invoice} has credit notes: credit the rest instead")
            invoice.status = Invoice.Status.VOID
            invoice.voided_at = timezone.now()
            invoice.save(update_fields=["status", "voided_at"])
            audit_record(
                tenant=invoice.tenant_id,
                actor=actor,
                action="invoice.voided",
                target=invoice,
                changes={
                    "status": {"from": Invoice.Status.OPEN, "to": Invoice.Status.VOID},
                    "reason": reason[:300],
                },
            )
    return invoice


def credit_note_issue(
    *, invoice_id: int, subtotal: Decimal, reason: str, actor: AbstractBaseUser | None
) -> CreditNote:
    """Credit part or all of an issued invoice (before tax; taxed on the invoice's terms).

    Credit notes have their own gapless series (``credit_note_prefix``), reference the
    invoice, and never exceed what the invoice billed. Audit-logged.
    """
    reason = reason.strip()
    if not reason:
        raise InvoiceStateError("say why the invoice is credited")
    if not subtotal.is_finite() or subtotal <= 0 or subtotal != pricing.cents(subtotal):
        raise InvoiceStateError("the amount must be positive, in cents (like 12.50)")
    with transaction.atomic():
        invoice = _invoice_for_update(invoice_id)
        if invoice.status not in (Invoice.Status.OPEN, Invoice.Status.PAID):
            raise InvoiceStateError(f"{invoice} is {invoice.status}: it cannot be credited")
        with tenant_scope(invoice.tenant_id):
            credited, _ = _credited(invoice)
            left = invoice.billed_total - credited
            if subtotal > left:
                raise InvoiceStateError(f"at most {left} is left to credit on {invoice}")
            terms = invoicing.TaxTerms(invoice.tax_mode, invoice.tax_rate_percent, invoice.tax_note)
            tax = invoicing.tax_of(subtotal, terms)
            issuer = invoice.issuer or invoicing.issuer_profile_get()
            sequence = _next_number(issuer=issuer, series=DocumentCounter.Series.CREDIT_NOTE)
            note = CreditNote.objects.create(
                tenant_id=invoice.tenant_id,
                invoice=invoice,
                issuer=issuer,
                number=f"{issuer.credit_note_prefix}{sequence:06d}",
                sequence=sequence,
                issue_date=utc_day(timezone.now()),
                reason=reason[:300],
                subtotal=subtotal,
                tax_total=tax,
                total=subtotal + tax,
                seller=issuer.snapshot(),
                buyer=invoice.buyer,
                created_by=actor if actor is not None and actor.is_authenticated else None,
            )
            audit_record(
                tenant=invoice.tenant_id,
                actor=actor,
                action="credit_note.issued",
                target=note,
                changes={
                    "invoice": invoice.number,
                    "total": str(note.total),
                    "reason": note.reason,
                },
            )
    return note


def billing_profile_update(
    *, tenant_id: int, actor: AbstractBaseUser | None, fields: dict[str, Any]
) -> TenantBillingProfile:
    """Save the tenant's billing profile (validated fields); audit-logs what changed."""
    with tenant_scope(tenant_id), transaction.atomic():
        profile = TenantBillingProfile.objects.select_for_update().filter().first()
        if profile is None:
            profile = TenantBillingProfile(tenant_id=tenant_id)
        changes = {}
        for name, value in fields.items():
            before = getattr(profile, name)
            if before != value:
                changes[name] = {"from": str(before), "to": str(value)}
                setattr(profile, name, value)
        profile.full_clean()
        profile.save()
        if changes:
            audit_record(
                tenant=tenant_id,
                actor=actor,
                action="billing_profile.updated",
                target=profile,
                target_label="billing profile",
                changes=changes,
            )
    return profile


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
