"""Rolling summaries and the seed a new upstream segment starts from.

``summary_refresh`` brings a session's one summary row up to date with the transcript. It
computes outside any transaction (the OpenAI summarizer may take seconds) and then stores with
compare-and-set on ``through_sequence``: when two workers race, the second finds the row
already advanced and stores nothing, so there are never two competing summaries.

A rotation never waits on a slow summarizer: ``seed_for_rotation`` starts the refresh in a
thread pool of its own (neither the event loop nor the one thread ``database_sync_to_async``
serialises every database call of the process through), waits at most
``VP_ROTATION_SUMMARY_WAIT_SECONDS`` for it, and otherwise seeds from the last stored summary
plus the turns it does not cover yet, verbatim. The refresh goes on and stores its result.

The tenant's data policy (``agents.privacy``) applies to what is stored: under "redact" and
"metadata" the summary, the prompt and the model's output are redacted (the transcript they
come from is already), so a rotated upstream is seeded without the caller's personal data;
under "metadata" a refresh that lands after the session ended stores no content.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import (
    IntegrityError,
    OperationalError,
    close_old_connections,
    connections,
    transaction,
)

from agents import privacy
from agents.models import Session, SessionSummary, TranscriptItem
from agents.summarizer import Turn, summarize_locally, summarize_with_openai
from agents.upstream import provider_key_for_tenant
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

SUMMARY_EVERY_ITEMS = 4
SEED_TURNS = 6
# Turns a summary behind the transcript may add verbatim to a seed (beyond SEED_TURNS).
SEED_UNSUMMARISED_TURNS = 3 * SEED_TURNS
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
        policy = privacy.tenant_data_policy(tenant_id=tenant_id)
        text, prompt, output = (
            privacy.content_while_live(policy, value) for value in (text, prompt, output)
        )

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
        elif policy == privacy.METADATA and _session_ended(session_id):
            # Stored after the end discarded the content (checked after storing: an end
            # committed later finds this row and discards it itself).
            privacy.session_content_discard(session_id=session_id, tenant_id=tenant_id)
        return SessionSummary.objects.get(pk=summary.pk)


def _session_ended(session_id: int) -> bool:
    return Session.objects.filter(pk=session_id, ended_at__isnull=False).exists()


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
    """The up-to-date summary and the last few turns verbatim (waits for the summarizer)."""
    summary_refresh(session_id=session_id, tenant_id=tenant_id)
    return session_seed_stored(session_id=session_id, tenant_id=tenant_id)


def session_seed_stored(*, session_id: int, tenant_id: int) -> Seed:
    """The stored summary and the turns it does not cover yet (at least the last SEED_TURNS,
    at most SEED_UNSUMMARISED_TURNS), verbatim, without calling the summarizer."""
    with tenant_scope(tenant_id):
        summary = SessionSummary.objects.filter(session_id=session_id).first()
        covered = summary.through_sequence if summary is not None else -1
        recent = list(
            TranscriptItem.objects.filter(
                session_id=session_id, kind=TranscriptItem.Kind.MESSAGE
            ).order_by("-sequence", "-pk")[: SEED_UNSUMMARISED_TURNS * 2]
        )
    recent.reverse()
    uncovered = _message_turns(item for item in recent if item.sequence > covered)
    turns = _message_turns(recent)
    keep = min(max(SEED_TURNS, len(uncovered)), SEED_UNSUMMARISED_TURNS)
    return Seed(summary=summary.text if summary is not None else "", turns=turns[-keep:])


_refreshes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vp-summary")
_refreshing: dict[int, Future[None]] = {}
_refreshing_lock = threading.Lock()


def _refresh_job(session_id: int, tenant_id: int) -> None:
    close_old_connections()
    try:
        summary_refresh(session_id=session_id, tenant_id=tenant_id)
    finally:
        connections.close_all()  # this thread's connections go back (pooled or closed)
        with _refreshing_lock:
            _refreshing.pop(session_id, None)


def summary_refresh_in_background(*, session_id: int, tenant_id: int) -> Future[None]:
    """Refresh the summary in the summary threads; one refresh per session at a time."""
    with _refreshing_lock:
        future = _refreshing.get(session_id)
        if future is None:
            future = _refreshes.submit(_refresh_job, session_id, tenant_id)
            _refreshing[session_id] = future
    return future


async def seed_for_rotation(*, session_id: int, tenant_id: int, wait_s: float) -> Seed:
    """The seed of a new upstream segment, within ``wait_s`` of the summarizer."""
    future = summary_refresh_in_background(session_id=session_id, tenant_id=tenant_id)
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), wait_s)
    except TimeoutError:
        logger.info(
            "summary of session %s not ready within %.1f s: seeding from the stored one",
            session_id,
            wait_s,
        )
    except Exception:
        logger.exception("summary of session %s failed: seeding from the stored one", session_id)
    return await database_sync_to_async(session_seed_stored)(
        session_id=session_id, tenant_id=tenant_id
    )
