"""Rolling summaries and the seed a new upstream segment starts from.

``summary_refresh`` brings a session's one summary row up to date with the transcript. It
computes outside any transaction (the OpenAI summarizer may take seconds) and then stores with
compare-and-set on ``through_sequence``: when two workers race, the second finds the row
already advanced and stores nothing, so there are never two competing summaries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, OperationalError, transaction

from agents.models import SessionSummary, TranscriptItem
from agents.summarizer import Turn, summarize_locally, summarize_with_openai
from agents.upstream import provider_key_for_tenant
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

SUMMARY_EVERY_ITEMS = 4
SEED_TURNS = 6
T = TypeVar("T")


def _retry_locked(write: Callable[[], T], attempts: int = 5) -> T:
    """SQLite answers a concurrent writer "database table is locked" at once: wait and retry."""
    for attempt in range(attempts):
        try:
            return write()
        except OperationalError as error:
            if "locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Seed:
    summary: str
    turns: list[Turn]


def _summary_row(*, session_id: int, tenant_id: int) -> SessionSummary:
    summary = SessionSummary.objects.filter(session_id=session_id).first()
    if summary is not None:
        return summary

    def create() -> SessionSummary:
        with transaction.atomic():
            return SessionSummary.objects.create(tenant_id=tenant_id, session_id=session_id)

    try:
        return _retry_locked(create)
    except IntegrityError:  # created concurrently
        return SessionSummary.objects.get(session_id=session_id)


def _message_turns(items) -> list[Turn]:
    return [
        Turn(role=item.role, text=item.text)
        for item in items
        if item.kind == TranscriptItem.Kind.MESSAGE
        and item.text
        and item.role in ("user", "assistant")
    ]


def summary_refresh(*, session_id: int, tenant_id: int) -> SessionSummary:
    """Fold transcript items not yet summarised into the session's summary (idempotent)."""
    return _retry_locked(lambda: _summary_refresh_once(session_id, tenant_id))


def _summary_refresh_once(session_id: int, tenant_id: int) -> SessionSummary:
    with tenant_scope(tenant_id):
        summary = _summary_row(session_id=session_id, tenant_id=tenant_id)
        seen = summary.through_sequence
        items = list(
            TranscriptItem.objects.filter(session_id=session_id, sequence__gt=seen).order_by(
                "sequence", "pk"
            )
        )
        if not items:
            return summary
        turns = _message_turns(items)
        method, model, prompt, output = "local", "", "", ""
        text = summary.text
        if turns:
            text, method, model, prompt, output = _summarize(tenant_id, summary.text, turns)

        def store() -> int:
            with transaction.atomic():
                return SessionSummary.objects.filter(pk=summary.pk, through_sequence=seen).update(
                    text=text,
                    through_sequence=items[-1].sequence,
                    revision=summary.revision + 1,
                    method=method,
                    model=model,
                    prompt=prompt,
                    output=output,
                )

        updated = _retry_locked(store)
        if not updated:
            logger.info("summary of session %s was refreshed concurrently", session_id)
        return SessionSummary.objects.get(pk=summary.pk)


def _summarize(tenant_id: int, previous: str, turns: list[Turn]) -> tuple[str, str, str, str, str]:
    """(text, method, model, prompt, output)."""
    api_key = provider_key_for_tenant(tenant_id=tenant_id)
    if api_key:
        model = settings.VP_SUMMARY_MODEL
        try:
            prompt, output = summarize_with_openai(
                api_key=api_key,
                base_url=settings.VP_OPENAI_API_BASE,
                model=model,
                previous=previous,
                turns=turns,
            )
            return output, "openai", model, prompt, output
        except Exception as error:  # the conversation must go on: fall back to local
            logger.warning(
                "OpenAI summarizer failed (%s); using the local one", type(error).__name__
            )
    text = summarize_locally(previous, turns)
    return text, "local", "", "", text


def session_seed(*, session_id: int, tenant_id: int) -> Seed:
    """The up-to-date summary and the last few turns verbatim, for a new upstream segment."""
    summary = summary_refresh(session_id=session_id, tenant_id=tenant_id)
    with tenant_scope(tenant_id):
        recent = list(
            TranscriptItem.objects.filter(
                session_id=session_id, kind=TranscriptItem.Kind.MESSAGE
            ).order_by("-sequence", "-pk")[: SEED_TURNS * 2]
        )
    turns = _message_turns(reversed(recent))[-SEED_TURNS:]
    return Seed(summary=summary.text, turns=turns)
