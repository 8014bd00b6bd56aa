"""Reads over the usage ledger."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing import pricing
from billing.models import UsageEvent
from tenants.scoping import tenant_scope

TOKEN_FIELDS = (
    "input_text_tokens", "input_audio_tokens", "input_image_tokens",
    "cached_text_tokens", "cached_audio_tokens", "cached_image_tokens",
    "output_text_tokens", "output_audio_tokens",
)  # fmt: skip


def month_start(moment: datetime | None = None) -> datetime:
    moment = moment or timezone.now()
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def event_counts(event: UsageEvent) -> pricing.TokenCounts:
    return pricing.TokenCounts(
        input_text=event.input_text_tokens,
        input_audio=event.input_audio_tokens,
        input_image=event.input_image_tokens,
        cached_text=event.cached_text_tokens,
        cached_audio=event.cached_audio_tokens,
        cached_image=event.cached_image_tokens,
        output_text=event.output_text_tokens,
        output_audio=event.output_audio_tokens,
        audio_ms=event.audio_ms,
    )


def rates_for(*, model: str, provider_is_local: bool = False) -> pricing.Rates:
    if provider_is_local:
        return pricing.LOCAL_ENGINE
    return pricing.DEFAULT_RATES.get(model, pricing.Rates())


def tenant_month_spend(*, tenant_id: int, now: datetime | None = None) -> Decimal:
    """Provider cost of the tenant's usage since the start of the month (unrounded)."""
    total = Decimal(0)
    with tenant_scope(tenant_id):
        events = UsageEvent.objects.filter(occurred_at__gte=month_start(now)).select_related(
            "agent"
        )
        for event in events.iterator():
            is_local = event.agent is not None and event.agent.provider == "local"
            total += pricing.cost(
                event_counts(event), rates_for(model=event.model, provider_is_local=is_local)
            )
    return total


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


def event_cost(event: UsageEvent) -> Decimal:
    """Provider cost of one usage event (unrounded)."""
    rates = rates_for(model=event.model, provider_is_local=event.provider == "local")
    return pricing.cost(event_counts(event), rates)
