"""Writes to the usage ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction

from billing.models import UsageEvent
from tenants.scoping import tenant_scope


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
) -> bool:
    """Append one usage event; a key seen before changes nothing. True when written."""
    with tenant_scope(tenant_id):
        if UsageEvent.objects.filter(upstream_response_id=key).exists():
            return False
        try:
            with transaction.atomic():
                UsageEvent.objects.create(
                    tenant_id=tenant_id,
                    session_id=session_id,
                    agent_id=agent_id,
                    provider=provider,
                    model=model,
                    upstream_response_id=key,
                    status=status,
                    audio_ms=audio_ms,
                    occurred_at=occurred_at,
                    **usage_counts_from_response(usage),
                )
        except IntegrityError:  # written concurrently by a retry: exactly once still holds
            return False
    return True
