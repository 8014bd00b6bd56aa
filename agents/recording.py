"""Stores what the bridge reports, off the audio path.

The bridge calls ``DatabaseRecorder`` methods synchronously; they only hand records over.

* Usage and the session's end go through the usage journal (``agents.journal``): appended to
  local disk (fsync) at once, written to the database by the journal's writer, which retries
  until the database has them (also after a crash: the next process replays the journal). A
  database outage delays them, never loses them; the end keeps its real time.
* Transcript items and segments are best effort: one writer task per session retries them
  through ``database_sync_to_async`` with a backoff while the journal sees the database, for
  ``BEST_EFFORT_SECONDS``, then drops them with an error (no money rides on them).
* The tenant's data policy (``agents.privacy``) decides what of the content is stored and shown
  live: each record is redacted once, in a worker thread (neither the event loop nor the one
  database thread), before its first write. What goes upstream is never touched.
* The heartbeat (every ``VP_SESSION_HEARTBEAT_SECONDS``) is the process's, for all its sessions
  at once (``agents.heartbeats``), and skipped while the journal sees the database down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from concurrent.futures import Future
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from agents import heartbeats, journal, privacy, services
from agents.compaction import SUMMARY_EVERY_ITEMS
from agents.realtime.relay.contracts import SegmentRecord, TranscriptRecord
from agents.tasks import session_summarize
from billing.usage import UsageRecord

logger = logging.getLogger(__name__)

BEST_EFFORT_SECONDS = 120.0  # how long a transcript item or segment is retried
BACKOFF_MAX_SECONDS = 5.0
# close() waits this long for the database to have the session's records when it is there
# (the console and the tests see them at once); past it, or when it is down, the journal
# writes them later.
CLOSE_WAIT_SECONDS = 5.0
LIVE_NOTIFY_TIMEOUT_S = 0.5  # a console live view is told within this, or not at all

Record = SegmentRecord | TranscriptRecord


def _live_item(record: TranscriptRecord, data_policy: str) -> dict[str, Any]:
    """A transcript item as the console's live view shows it (``record`` as stored)."""
    text, data = privacy.transcript_item_for_sending(
        data_policy, kind=record.kind, text=record.text, data=record.data
    )
    return {"item_id": record.item_id, "sequence": record.sequence, "role": record.role,
            "kind": record.kind, "text": text, "data": data}  # fmt: skip


def _record_for_storage(record: Record, data_policy: str) -> Record:
    """The record as the tenant's data policy lets it be stored while the session runs."""
    if isinstance(record, TranscriptRecord):
        text, data = privacy.transcript_item_for_storage(
            data_policy, kind=record.kind, text=record.text, data=record.data
        )
        return dataclasses.replace(record, text=text, data=data)
    seed = privacy.content_while_live(data_policy, record.seed_summary)
    return dataclasses.replace(record, seed_summary=seed)


def _enqueue_summary(session_id: int, tenant_id: int) -> None:
    session_summarize.delay(session_id, tenant_id)


class DatabaseRecorder:
    def __init__(
        self,
        *,
        tenant_id: int,
        session_id: int,
        agent_id: int,
        provider: str,
        widget_key_id: int | None = None,
        heartbeat_seconds: float | None = None,
        data_policy: str = privacy.KEEP,
    ) -> None:
        self.tenant_id = tenant_id
        self.data_policy = data_policy  # the tenant's, when the session started
        self._closed = False
        self.widget_key_id = widget_key_id
        self.session_id = session_id
        self.agent_id = agent_id
        self.provider = provider
        # Records with when they came (monotonic): one is given up BEST_EFFORT_SECONDS after.
        self._queue: asyncio.Queue[tuple[Record, float] | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._heartbeats: heartbeats.Heartbeats | None = None
        self._heartbeat_seconds = (
            settings.VP_SESSION_HEARTBEAT_SECONDS
            if heartbeat_seconds is None
            else heartbeat_seconds
        )
        self._audio = (0, 0)
        self._items_since_summary = 0
        self.on_usage_written: Any = None  # optional callback (spend caps), on the event loop
        self._journal = journal.get()  # started on first use: replays orphans at once

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="recorder-writer")
        # This process's sessions beat together (one database call per interval for all).
        self._heartbeats = heartbeats.for_interval(self._heartbeat_seconds)
        self._heartbeats.add(
            session_id=self.session_id, tenant_id=self.tenant_id, audio=self._current_audio
        )

    # --- the Recorder protocol (non-blocking: typed records go on the queue) -----------------

    def record_segment(self, record: SegmentRecord) -> None:
        self._queue.put_nowait((record, time.monotonic()))

    def record_transcript(self, record: TranscriptRecord) -> None:
        if record.item_id:
            self._queue.put_nowait((record, time.monotonic()))

    def record_usage(self, record: UsageRecord) -> None:
        # Stamped now: a record written late (database trouble) still counts for when it happened.
        ticket = journal.submit_usage(
            tenant_id=self.tenant_id, session_id=self.session_id, agent_id=self.agent_id,
            widget_key_id=self.widget_key_id, provider=self.provider, key=record.key,
            model=record.model, status=record.status, usage=record.usage,
            audio_ms=record.audio_ms, occurred_at=timezone.now(),
        )  # fmt: skip
        loop = asyncio.get_running_loop()

        def written(_: Future[None]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (process exiting)
                loop.call_soon_threadsafe(self._usage_written)

        ticket.written.add_done_callback(written)

    def _usage_written(self) -> None:
        if self.on_usage_written is not None:
            self.on_usage_written()

    def record_audio(self, *, in_ms: int, out_ms: int) -> None:
        self._audio = (in_ms, out_ms)

    def set_audio_source(self, source: Any) -> None:
        """A callable giving (in_ms, out_ms) now, read by the heartbeat."""
        self._audio_source = source

    def set_first_audio_source(self, source: Any) -> None:
        """A callable giving the session's time to first answer audio (ms, or None), read at
        the end."""
        self._first_audio_source = source

    # --- writing ----------------------------------------------------------------------------

    @database_sync_to_async
    def _write(self, record: Record) -> None:
        if isinstance(record, TranscriptRecord):
            if self._closed and self.data_policy == privacy.METADATA:
                # Written after the end (the database was slow): the content has no more use.
                text, data = privacy.transcript_item_metadata(
                    kind=record.kind, text=record.text, data=record.data
                )
                record = dataclasses.replace(record, text=text, data=data)
            services.transcript_item_record(
                tenant_id=self.tenant_id,
                session_id=self.session_id,
                item_id=record.item_id,
                sequence=record.sequence,
                role=record.role,
                kind=record.kind,
                text=record.text,
                data=record.data,
            )
        else:
            services.session_add_upstream(
                tenant_id=self.tenant_id,
                session_id=self.session_id,
                upstream_session_id=record.upstream_session_id,
                reason=record.reason,
                seed_summary=record.seed_summary,
                gap_ms=record.gap_ms,
            )

    async def _write_best_effort(self, record: Record, came_at: float) -> None:
        """Write one transcript item or segment, retrying while the database comes back."""
        deadline = came_at + BEST_EFFORT_SECONDS
        if self.data_policy != privacy.KEEP:
            record = await asyncio.to_thread(_record_for_storage, record, self.data_policy)
        delay = 0.25
        while True:
            if self._journal.database_available():
                try:
                    await self._write(record)
                except Exception as exc:
                    if journal.is_unreachable(exc):
                        self._journal.report_database_error()
                    logger.warning("could not store %s: %s", type(record).__name__, exc)
                else:
                    await self._after_write(record)
                    return
            if time.monotonic() >= deadline:
                logger.error("dropped %r of session %s after retries", record, self.session_id)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def _after_write(self, record: Record) -> None:
        if isinstance(record, TranscriptRecord):
            await self._notify_live(
                {"type": "live.transcript", "item": _live_item(record, self.data_policy)}
            )
            await self._maybe_summarize()
        elif record.reason != "initial":
            await self._notify_live({"type": "live.segment", "reason": record.reason})

    async def _write_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            await self._write_best_effort(*entry)

    async def _maybe_summarize(self) -> None:
        """Every few items, ask a worker to fold them into the rolling summary."""
        self._items_since_summary += 1
        if self._items_since_summary < SUMMARY_EVERY_ITEMS:
            return
        self._items_since_summary = 0
        with contextlib.suppress(Exception):  # a broker hiccup must not stop recording
            await database_sync_to_async(_enqueue_summary)(self.session_id, self.tenant_id)

    async def _notify_live(self, message: dict[str, Any]) -> None:
        """Tell console pages watching this session (best effort: the channel layer may drop)."""
        layer = get_channel_layer()
        if layer is None:
            return
        # Bounded: an unreachable Redis costs a record half a second, not its connect timeout.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LIVE_NOTIFY_TIMEOUT_S):
                await layer.group_send(services.session_live_group(self.session_id), message)

    def _current_audio(self) -> tuple[int, int]:
        source = getattr(self, "_audio_source", None)
        return source() if source is not None else self._audio

    async def close(self, *, reason: str) -> None:
        """Journal the end of the session (on disk before anything else), let the database have
        it after the session's last transcript items, and wait a little for that."""
        ended_at = timezone.now()
        self._closed = True
        if self._heartbeats is not None:
            self._heartbeats.discard(self.session_id)
        self._queue.put_nowait(None)
        in_ms, out_ms = self._current_audio()
        first_audio = getattr(self, "_first_audio_source", None)
        ticket = journal.submit_session_end(
            session_id=self.session_id,
            tenant_id=self.tenant_id,
            reason=reason,
            audio_in_ms=in_ms,
            audio_out_ms=out_ms,
            first_audio_ms=first_audio() if first_audio is not None else None,
            ended_at=ended_at,
            # Whoever sees the end finds the transcript stored; released below, and written
            # anyway if this coroutine is cancelled (Daphne's application close timeout).
            hold_s=2 * CLOSE_WAIT_SECONDS,
        )
        await _wait(ticket.durable, CLOSE_WAIT_SECONDS)
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._writer), CLOSE_WAIT_SECONDS)
        self._journal.release(ticket)
        if self._journal.database_available():
            await _wait(ticket.written, CLOSE_WAIT_SECONDS)
        await self._notify_live({"type": "live.ended", "reason": reason})


async def _wait(future: Future[None], timeout: float) -> None:
    """Wait for a journal future without ever cancelling it (its thread completes it)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout)
