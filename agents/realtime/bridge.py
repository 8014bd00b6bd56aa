"""The relay between one client socket and one upstream realtime session.

``RealtimeBridge`` knows nothing of Channels or Django: the widget consumer, the API consumer,
the tests and the benchmark all drive it the same way. It

* writes the upstream ``session.update`` from the agent's policy (never from the client);
* filters client events through the policy's allow-list (``policy.client_event_filter``);
* passes audio both ways without decoding it (``frames``), metering its duration;
* reads only the control events it needs (session ids, conversation items, transcripts,
  ``response.done`` usage, errors) and hands what must be stored to a ``Recorder``, whose
  methods only enqueue: the audio path never waits for a database;
* closes the upstream as soon as the client leaves, and tells the client clearly when the
  upstream goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.realtime import frames
from agents.realtime.policy import (
    PolicyViolation,
    SessionPolicy,
    client_event_filter,
    sanitize_session_event,
    session_update_event,
)

logger = logging.getLogger(__name__)

# Close codes sent to the client.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_UPSTREAM_ERROR = 1011
CLOSE_TRY_AGAIN = 1013

# Upstream events relayed without a JSON decode: the frequent ones, of no interest to the relay.
_RELAY_ONLY = frozenset(
    {
        "response.output_audio_transcript.delta",
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "conversation.item.input_audio_transcription.delta",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.output_text.done",
        "rate_limits.updated",
    }
)
_AUDIO_DELTA = "response.output_audio.delta"
# A client more than this much audio ahead of real time (after the burst) is disconnected.
FLOOD_CLOSE_MS = 10_000
ERROR_REPORT_INTERVAL_S = 1.0


class ClientSink(Protocol):
    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Upstream(Protocol):
    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class TranscriptRecord:
    item_id: str
    sequence: int
    role: str
    kind: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageRecord:
    """One billable unit: a ``response.done`` (tokens) or a span of metered audio."""

    key: str
    model: str
    status: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    audio_ms: int = 0


class Recorder(Protocol):
    """Receives what must be stored. Every method must return at once (it may only enqueue)."""

    def upstream_session(self, upstream_session_id: str) -> None: ...

    def transcript(self, record: TranscriptRecord) -> None: ...

    def usage(self, record: UsageRecord) -> None: ...

    def audio(self, *, in_ms: int, out_ms: int) -> None: ...


class SpendGuard(Protocol):
    """Live spend cap of a session. Both methods are in-memory and return at once."""

    def allows_response(self) -> bool:
        """May another response start? (checked before forwarding a client's response.create)"""
        ...

    def on_usage(self, record: UsageRecord) -> bool:
        """Count a response's usage; False once the cap is reached."""
        ...


CLOSE_BUDGET_EXHAUSTED = 4402


class NullRecorder:
    """Stores nothing (benchmarks and tests that only look at the wire)."""

    def upstream_session(self, upstream_session_id: str) -> None:
        pass

    def transcript(self, record: TranscriptRecord) -> None:
        pass

    def usage(self, record: UsageRecord) -> None:
        pass

    def audio(self, *, in_ms: int, out_ms: int) -> None:
        pass


def _closed_details(error: BaseException) -> tuple[int | None, str]:
    """(close code, reason) of an upstream that went away (websockets or the local engine)."""
    if hasattr(error, "rcvd"):  # websockets.ConnectionClosed
        received = error.rcvd
        return (received.code, received.reason) if received is not None else (1006, "")
    return getattr(error, "code", None), getattr(error, "reason", "") or ""


class RealtimeBridge:
    def __init__(
        self,
        *,
        policy: SessionPolicy,
        client: ClientSink,
        connect_upstream: Callable[[], Awaitable[Upstream]],
        recorder: Recorder | None = None,
        max_duration_s: float | None = None,
        max_frame_chars: int = 1024 * 1024,
        spend_guard: SpendGuard | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.client = client
        self.recorder = recorder or NullRecorder()
        self._connect_upstream = connect_upstream
        self._max_duration_s = max_duration_s
        self._max_frame_chars = max_frame_chars
        self.spend_guard = spend_guard
        self._clock = clock
        self.upstream: Upstream | None = None
        self.upstream_session_id = ""
        self.end_reason = ""
        self.closed = asyncio.Event()
        self._pump_task: asyncio.Task | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._started_at = clock()
        self._audio_in_bytes = 0
        self._audio_out_bytes = 0
        self._metered_in_bytes = 0
        self._excess_ms = 0.0
        self._last_error_report = 0.0
        self._sequence: dict[str, int] = {}
        self._budget_reached = False
        self.response_active = False

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream, configure it from the policy, and start relaying its events."""
        self.upstream = await self._connect_upstream()
        await self.upstream.send(frames.dumps(session_update_event(self.policy)))
        self._pump_task = asyncio.create_task(self._pump(), name="realtime-bridge-pump")
        if self._max_duration_s:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self._max_duration_s, self._on_max_duration)

    async def close(self, reason: str, *, code: int = CLOSE_NORMAL, message: str = "") -> None:
        """End the session: close the upstream at once (it bills while open), then the client."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.end_reason = self.end_reason or reason
        if self._deadline is not None:
            self._deadline.cancel()
        if self._pump_task is not None and self._pump_task is not asyncio.current_task():
            self._pump_task.cancel()
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.close()
        self._meter_minutes(final=True)
        self.recorder.audio(in_ms=self.audio_in_ms, out_ms=self.audio_out_ms)
        if reason != "client_closed":
            with contextlib.suppress(Exception):
                await self.client.close(code, message or reason)

    async def wait_closed(self) -> None:
        await self.closed.wait()
        if self._pump_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task

    @property
    def audio_in_ms(self) -> int:
        return self._audio_in_bytes // self.policy.input_bytes_per_ms

    @property
    def audio_out_ms(self) -> int:
        return self._audio_out_bytes // self.policy.output_bytes_per_ms

    # --- client → upstream ----------------------------------------------------------------

    async def from_client(self, text: str | None = None, data: bytes | None = None) -> None:
        """Handle one client frame. Bad input gets an ``error`` event; the session goes on."""
        if self.closed.is_set() or self.upstream is None:
            return
        if text is None:
            await self._client_error(
                "binary_frames_not_supported",
                "send events as JSON text frames; audio goes base64 in input_audio_buffer.append",
            )
            return
        if len(text) > self._max_frame_chars:
            await self._client_error(
                "frame_too_large",
                f"frames are limited to {self._max_frame_chars} characters; "
                "send audio in chunks of 20-100 ms",
            )
            return
        audio_bytes = frames.append_audio_bytes(text)
        if audio_bytes is not None:
            await self._client_audio(text, audio_bytes)
            return
        event = frames.loads_object(text)
        if event is None:
            await self._client_error("invalid_json", "the frame is not a JSON object")
            return
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            forward = client_event_filter(self.policy, event)
        except PolicyViolation as violation:
            await self._client_error(
                violation.code, violation.message, event_id=event_id, param=violation.param
            )
            return
        except Exception:  # a shape the policy did not foresee: refuse it, keep the session
            logger.exception("client event filter failed")
            await self._client_error(
                "invalid_value", "the event could not be understood", event_id=event_id
            )
            return
        if forward.get("type") == "response.create" and not self._spend_allows():
            await self._client_error(
                "budget_exhausted",
                "the spending limit is reached; no new responses can start",
                event_id=event_id,
            )
            return
        if forward.get("type") == "input_audio_buffer.append":
            # An append that is not in the canonical shape (extra fields): re-serialise the
            # two fields that matter so that nothing else rides along.
            audio = forward.get("audio")
            if not isinstance(audio, str):
                await self._client_error("invalid_value", "audio must be a base64 string")
                return
            canonical = frames.dumps({"type": "input_audio_buffer.append", "audio": audio})
            audio_bytes = frames.append_audio_bytes(canonical)
            if audio_bytes is None:
                await self._client_error("invalid_value", "audio must be base64", param="audio")
                return
            await self._client_audio(canonical, audio_bytes)
            return
        await self.upstream.send(frames.dumps(forward))

    async def _client_audio(self, text: str, audio_bytes: int) -> None:
        frame_ms = audio_bytes / self.policy.input_bytes_per_ms
        elapsed_ms = (self._clock() - self._started_at) * 1000
        allowed_ms = elapsed_ms + self.policy.audio_burst_ms
        if self.audio_in_ms + frame_ms > allowed_ms:
            self._excess_ms += frame_ms
            if self._excess_ms > FLOOD_CLOSE_MS:
                await self.close(
                    "policy_violation",
                    code=CLOSE_POLICY,
                    message="audio flood: sent far faster than real time",
                )
                return
            await self._client_error(
                "audio_rate_exceeded",
                "audio is arriving faster than real time; the frame was dropped",
                rate_limited=True,
            )
            return
        self._audio_in_bytes += audio_bytes
        await self.upstream.send(text)

    async def _client_error(
        self,
        code: str,
        message: str,
        *,
        event_id: str | None = None,
        param: str | None = None,
        rate_limited: bool = False,
    ) -> None:
        if rate_limited:
            now = self._clock()
            if now - self._last_error_report < ERROR_REPORT_INTERVAL_S:
                return
            self._last_error_report = now
        event = frames.error_event(code, message, event_id=event_id, param=param)
        await self.client.send_text(frames.dumps(event))

    # --- upstream → client ----------------------------------------------------------------

    async def _pump(self) -> None:
        upstream = self.upstream
        send = self.client.send_text
        try:
            while True:
                message = await upstream.recv()
                if not isinstance(message, str):
                    continue
                event_type = frames.peek_type(message)
                if event_type == _AUDIO_DELTA:
                    self._audio_out_bytes += frames.delta_bytes(message)
                    await send(message)
                    continue
                if event_type in _RELAY_ONLY:
                    await send(message)
                    continue
                event = frames.loads_object(message)
                if event is None:
                    logger.warning("upstream sent a frame that is not a JSON object")
                    continue
                outgoing = self._on_upstream_event(event, message)
                if outgoing is not None:
                    await send(outgoing)
                if self._budget_reached:
                    await self._on_budget_exhausted()
                    return
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the upstream connection ended or broke
            await self._on_upstream_closed(error)

    def _on_upstream_event(self, event: dict[str, Any], message: str) -> str | None:
        event_type = event.get("type")
        if event_type == _AUDIO_DELTA:  # an audio delta in an unusual key order
            delta = event.get("delta")
            if isinstance(delta, str):
                self._audio_out_bytes += len(delta) // 4 * 3
            return message
        if event_type in ("session.created", "session.updated"):
            if event_type == "session.created":
                session_id = (event.get("session") or {}).get("id")
                if isinstance(session_id, str):
                    self.upstream_session_id = session_id
                    self.recorder.upstream_session(session_id)
            return frames.dumps(sanitize_session_event(self.policy, event))
        if event_type in ("conversation.item.added", "conversation.item.created"):
            self._on_item_added(event.get("item") or {})
        elif event_type == "conversation.item.input_audio_transcription.completed":
            self._on_user_transcript(event)
        elif event_type == "response.output_item.added":
            item = event.get("item") or {}
            self._sequence_of(item.get("id"))
        elif event_type == "response.output_item.done":
            self._on_output_item(event.get("item") or {})
        elif event_type == "response.created":
            self.response_active = True
        elif event_type == "response.done":
            self.response_active = False
            self._on_response_done(event.get("response") or {})
        elif event_type == "input_audio_buffer.committed":
            self._sequence_of(event.get("item_id"))
            self._meter_minutes()
        elif event_type == "error":
            error = event.get("error") or {}
            if error.get("code") == "session_expired":
                self.end_reason = "session_expired"
        return message

    def _sequence_of(self, item_id: Any) -> int:
        if not isinstance(item_id, str) or not item_id:
            return len(self._sequence)
        sequence = self._sequence.get(item_id)
        if sequence is None:
            sequence = self._sequence[item_id] = len(self._sequence)
        return sequence

    def _on_item_added(self, item: dict[str, Any]) -> None:
        item_id = item.get("id")
        sequence = self._sequence_of(item_id)
        item_type = item.get("type")
        if item_type == "message" and item.get("role") in ("user", "system"):
            texts, images = [], 0
            for part in item.get("content") or []:
                if part.get("type") == "input_text":
                    texts.append(part.get("text") or "")
                elif part.get("type") == "input_image":
                    images += 1
            if texts or images:  # an audio item is recorded when its transcript completes
                self.recorder.transcript(
                    TranscriptRecord(
                        item_id=item_id,
                        sequence=sequence,
                        role=item["role"],
                        kind="message",
                        text=" ".join(texts),
                        data={"images": images} if images else {},
                    )
                )
        elif item_type == "function_call_output":
            self.recorder.transcript(
                TranscriptRecord(
                    item_id=item_id,
                    sequence=sequence,
                    role="tool",
                    kind="function_call_output",
                    text=str(item.get("output") or ""),
                    data={"call_id": item.get("call_id")},
                )
            )

    def _on_user_transcript(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        self.recorder.transcript(
            TranscriptRecord(
                item_id=item_id,
                sequence=self._sequence_of(item_id),
                role="user",
                kind="message",
                text=event.get("transcript") or "",
            )
        )

    def _on_output_item(self, item: dict[str, Any]) -> None:
        item_id = item.get("id")
        item_type = item.get("type")
        if item_type == "message":
            texts = [
                part.get("transcript") or part.get("text") or ""
                for part in item.get("content") or []
            ]
            self.recorder.transcript(
                TranscriptRecord(
                    item_id=item_id,
                    sequence=self._sequence_of(item_id),
                    role="assistant",
                    kind="message",
                    text=" ".join(text for text in texts if text),
                    data={"status": item.get("status")},
                )
            )
        elif item_type == "function_call":
            self.recorder.transcript(
                TranscriptRecord(
                    item_id=item_id,
                    sequence=self._sequence_of(item_id),
                    role="assistant",
                    kind="function_call",
                    text=item.get("name") or "",
                    data={
                        "name": item.get("name"),
                        "call_id": item.get("call_id"),
                        "arguments": item.get("arguments"),
                    },
                )
            )

    def _on_response_done(self, response: dict[str, Any]) -> None:
        response_id = response.get("id")
        if not isinstance(response_id, str) or not response_id:
            logger.warning("response.done without an id: its usage cannot be keyed")
            return
        record = UsageRecord(
            key=response_id,
            model=self.policy.model,
            status=response.get("status") or "",
            usage=response.get("usage") or {},
        )
        self.recorder.usage(record)
        if self.spend_guard is not None and not self.spend_guard.on_usage(record):
            self._budget_reached = True

    def _meter_minutes(self, *, final: bool = False) -> None:
        """Minute-metered sessions (transcription) bill the audio streamed, span by span."""
        if not self.policy.is_transcription or not self.upstream_session_id:
            return
        span = self._audio_in_bytes - self._metered_in_bytes
        if span <= 0:
            return
        self._metered_in_bytes = self._audio_in_bytes
        key = f"{self.upstream_session_id}:audio:{self._audio_in_bytes}"
        self.recorder.usage(
            UsageRecord(
                key=key,
                model=self.policy.model,
                status="final" if final else "committed",
                audio_ms=span // self.policy.input_bytes_per_ms,
            )
        )

    async def _on_upstream_closed(self, error: BaseException) -> None:
        if self.closed.is_set():
            return
        code, reason = _closed_details(error)
        if self.end_reason == "session_expired" or code == CLOSE_GOING_AWAY:
            self.end_reason = self.end_reason or "session_expired"
            await self._client_error_event(
                "session_expired", "the realtime session reached its maximum duration"
            )
            await self.close("session_expired", code=CLOSE_GOING_AWAY, message="session expired")
            return
        logger.info("upstream closed (code=%s reason=%s)", code, reason)
        await self._client_error_event(
            "upstream_closed",
            f"the voice service closed the session (code {code})"
            + (f": {reason}" if reason else ""),
            error_type="server_error",
        )
        await self.close("upstream_closed", code=CLOSE_UPSTREAM_ERROR, message="upstream closed")

    async def _client_error_event(
        self, code: str, message: str, *, error_type: str = "invalid_request_error"
    ) -> None:
        with contextlib.suppress(Exception):
            await self.client.send_text(
                frames.dumps(frames.error_event(code, message, error_type=error_type))
            )

    def _spend_allows(self) -> bool:
        return self.spend_guard is None or (
            not self._budget_reached and self.spend_guard.allows_response()
        )

    async def _on_budget_exhausted(self) -> None:
        """The response that crossed the cap finished and is billed; nothing more is spent."""
        await self._client_error_event(
            "budget_exhausted", "the spending limit is reached; the session ends"
        )
        await self.close(
            "budget_exhausted", code=CLOSE_BUDGET_EXHAUSTED, message="budget exhausted"
        )

    def _on_max_duration(self) -> None:
        async def end() -> None:
            await self._client_error_event(
                "session_max_duration", "the session reached the tenant's maximum length"
            )
            await self.close("max_duration", code=CLOSE_NORMAL, message="maximum duration")

        asyncio.get_running_loop().create_task(end())
