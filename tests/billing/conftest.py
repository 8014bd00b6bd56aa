"""Billing fixtures: tenant A with two agents and usage events written through the ledger."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents.configuration import agent_create
from billing.services import usage_event_record


def at(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def usage(
    *,
    text_in: int = 0,
    audio_in: int = 0,
    image_in: int = 0,
    cached_text: int = 0,
    cached_audio: int = 0,
    cached_image: int = 0,
    text_out: int = 0,
    audio_out: int = 0,
) -> dict:
    """A ``response.done`` usage object, shaped as the Realtime API reports it."""
    return {
        "total_tokens": text_in + audio_in + image_in + text_out + audio_out,
        "input_tokens": text_in + audio_in + image_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": audio_in,
            "image_tokens": image_in,
            "cached_tokens": cached_text + cached_audio + cached_image,
            "cached_tokens_details": {
                "text_tokens": cached_text,
                "audio_tokens": cached_audio,
                "image_tokens": cached_image,
            },
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }


def record(
    tenant, agent, key, when, *, model=None, provider="openai", audio_ms=0,
    status="completed", session=None, widget_key=None, **counts,
) -> bool:  # fmt: skip
    return usage_event_record(
        tenant_id=tenant.pk,
        session_id=session.pk if session else None,
        agent_id=agent.pk if agent else None,
        widget_key_id=widget_key.pk if widget_key else None,
        provider=provider,
        model=model or (agent.model if agent else "gpt-realtime-2"),
        key=key,
        status=status,
        usage=usage(**counts),
        audio_ms=audio_ms,
        occurred_at=when,
    )


@pytest.fixture
def agents_a(world):
    support = agent_create(
        tenant=world.tenant_a, actor=world.owner_a,
        fields={"name": "Support", "provider": "openai", "model": "gpt-realtime-2"},
    )  # fmt: skip
    faq = agent_create(
        tenant=world.tenant_a, actor=world.owner_a,
        fields={"name": "FAQ", "provider": "openai", "model": "gpt-realtime-mini"},
    )  # fmt: skip
    return {"support": support, "faq": faq}
