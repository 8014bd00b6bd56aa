"""Stores what the bridge reports, off the audio path.

The bridge calls ``DatabaseRecorder`` methods synchronously; they only append to a queue. One
writer task drains it through ``database_sync_to_async`` (which also does Django's connection
hygiene around each call), so a slow database delays records, never audio. Usage is written as
soon as its ``response.done`` arrives, and ``close()`` flushes what is left, so usage is kept
even when the session ends abruptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.utils import timezone

from agents import services
from agents.compaction import SUMMARY_EVERY_ITEMS
from agents.realtime.relay.contracts import SegmentRecord, TranscriptRecord
from agents.tasks import session_summarize
from billing.services import usage_event_record
from billing.usage import UsageRecord

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class StampedUsage:
    usage: UsageRecord
    occurred_at: datetime


Record = SegmentRecord | TranscriptRecord | StampedUsage


def _live_item(record: TranscriptRecord) -> dict[str, Any]:
    """A transcript item as the console's live view shows it."""
    return {"item_id": record.item_id, "sequence": record.sequence, "role": record.role,
            "kind": record.kind, "text": record.text, "data": record.data}  # fmt: skip


_RETRIES = 3


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
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.tenant_id = tenant_id
        self.widget_key_id = widget_key_id
        self.session_id = session_id
        self.agent_id = agent_id
        self.provider = provider
        self._queue: asyncio.Queue[Record | None] = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self._heartbeat: asyncio.Task | None = None
        self._heartbeat_seconds = heartbeat_seconds
        self._audio = (0, 0)
        self._items_since_summary = 0
        self.on_usage_written: Any = None  # optional callback (spend caps)

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="recorder-writer")
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="recorder-heartbeat")

    # --- the Recorder protocol (non-blocking: typed records go on the queue) -----------------

    def record_segment(self, record: SegmentRecord) -> None:
        self._queue.put_nowait(record)

    def record_transcript(self, record: TranscriptRecord) -> None:
        if record.item_id:
            self._queue.put_nowait(record)

    def record_usage(self, record: UsageRecord) -> None:
        # Stamped now: a record written late (database trouble) still counts for when it happened.
        self._queue.put_nowait(StampedUsage(record, timezone.now()))

    def record_audio(self, *, in_ms: int, out_ms: int) -> None:
        self._audio = (in_ms, out_ms)

    def set_audio_source(self, source: Any) -> None:
        """A callable giving (in_ms, out_ms) now, read by the heartbeat."""
        self._audio_source = source

    # --- writing ----------------------------------------------------------------------------

    @database_sync_to_async
    def _write(self, record: Record) -> None:
        if isinstance(record, StampedUsage):
            usage = record.usage
            usage_event_record(
                tenant_id=self.tenant_id,
                session_id=self.session_id,
                agent_id=self.agent_id,
                widget_key_id=self.widget_key_id,
                provider=self.provider,
                key=usage.key,
                model=usage.model,
                status=usage.status,
                usage=usage.usage,
                audio_ms=usage.audio_ms,
                occurred_at=record.occurred_at,
            )
        elif isinstance(record, TranscriptRecord):
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

    async def _write_with_retry(self, record: Record) -> None:
        for attempt in range(_RETRIES):
            try:
                await self._write(record)
                if isinstance(record, StampedUsage) and self.on_usage_written is not None:
                    self.on_usage_written()
                if isinstance(record, TranscriptRecord):
                    await self._notify_live({"type": "live.transcript", "item": _live_item(record)})
                    await self._maybe_summarize()
                elif isinstance(record, SegmentRecord) and record.reason != "initial":
                    await self._notify_live({"type": "live.segment", "reason": record.reason})
                return
            except Exception:
                logger.exception(
                    "could not store %s (attempt %d)", type(record).__name__, attempt + 1
                )
                await asyncio.sleep(0.2 * (attempt + 1))
        logger.error("dropped %r of session %s after retries", record, self.session_id)

    async def _write_loop(self) -> None:
        while True:
            entry = await self._queue.get()
            if entry is None:
                return
            await self._write_with_retry(entry)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            in_ms, out_ms = self._current_audio()
            with contextlib.suppress(Exception):
                await database_sync_to_async(services.session_heartbeat)(
                    session_id=self.session_id,
                    tenant_id=self.tenant_id,
                    audio_in_ms=in_ms,
                    audio_out_ms=out_ms,
                )

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
        with contextlib.suppress(Exception):
            await layer.group_send(services.session_live_group(self.session_id), message)

    def _current_audio(self) -> tuple[int, int]:
        source = getattr(self, "_audio_source", None)
        return source() if source is not None else self._audio

    async def close(self, *, reason: str) -> None:
        """Flush every pending record, then record the end of the session."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self._queue.put_nowait(None)
        if self._writer is not None:
            await self._writer
        in_ms, out_ms = self._current_audio()
        await database_sync_to_async(services.session_end_record)(
            session_id=self.session_id,
            tenant_id=self.tenant_id,
            reason=reason,
            audio_in_ms=in_ms,
            audio_out_ms=out_ms,
        )
        await self._notify_live({"type": "live.ended", "reason": reason})
