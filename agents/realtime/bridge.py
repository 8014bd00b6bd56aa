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
  upstream goes away;
* with a ``Continuation``, keeps the conversation going across upstream sessions: before the
  provider's time limit (at a moment of silence), when the context fills, or when the upstream
  drops or expires, it opens a new upstream seeded with a summary and the last turns while the
  client's socket stays open and its audio is buffered, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.realtime import frames, tools
from agents.realtime.policy import (
    CHANNEL_PHONE,
    CHANNEL_WIDGET,
    SEED_ITEM_PREFIX,
    PolicyViolation,
    SessionPolicy,
    client_event_filter,
    sanitize_session_event,
    seed_item_event,
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
        "response.content_part.added",
        "response.content_part.done",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.output_text.done",
        "rate_limits.updated",
    }
)
_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "session.output_audio.delta"})
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

    def upstream_session(
        self, upstream_session_id: str, *, reason: str, seed_summary: str, gap_ms: int | None
    ) -> None: ...

    def transcript(self, record: TranscriptRecord) -> None: ...

    def usage(self, record: UsageRecord) -> None: ...

    def audio(self, *, in_ms: int, out_ms: int) -> None: ...


class ToolExecutor(Protocol):
    async def call(self, tool: dict[str, Any], *, call_id: str, arguments: str) -> Any:
        """Run a webhook tool; the result has ``output``, ``latency_ms`` and ``error``."""
        ...


@dataclass
class ToolCall:
    call_id: str
    name: str
    execution: str  # "webhook" (the platform runs it) or "client" (the client answers)
    response_id: str
    answered: bool = False
    task: asyncio.Task | None = None


TOOL_OUTPUT_PREFIX = "vp_out_"


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

    def upstream_session(
        self, upstream_session_id: str, *, reason: str, seed_summary: str, gap_ms: int | None
    ) -> None:
        pass

    def transcript(self, record: TranscriptRecord) -> None:
        pass

    def usage(self, record: UsageRecord) -> None:
        pass

    def audio(self, *, in_ms: int, out_ms: int) -> None:
        pass


_FAILURES = {
    "upstream_auth_failed": (
        "The voice service refused this tenant's credentials.",
        CLOSE_UPSTREAM_ERROR,
    ),
    "upstream_rate_limited": (
        "The voice service is rate limiting this tenant; try again later.",
        CLOSE_TRY_AGAIN,
    ),
    "upstream_unavailable": (
        "The voice service could not be reached; try again shortly.",
        CLOSE_TRY_AGAIN,
    ),
}


def upstream_failure(error: BaseException | None = None, *, code: str = "") -> tuple[str, str, int]:
    """(error code, message, close code) for an upstream that could not be opened.

    Only network trouble and 5xx are worth retrying at once; a refused key (401/403) is final
    and a rate limit (429) calls for a longer wait.
    """
    if not code:
        status = getattr(getattr(error, "response", None), "status_code", None)
        code = {401: "upstream_auth_failed", 403: "upstream_auth_failed"}.get(status, "")
        code = code or ("upstream_rate_limited" if status == 429 else "upstream_unavailable")
    message, close_code = _FAILURES.get(code, _FAILURES["upstream_unavailable"])
    return code, message, close_code


@dataclass(frozen=True)
class Continuation:
    """How a conversation outlives its upstream sessions.

    ``seed`` returns an object with ``summary`` (str) and ``turns`` (objects with ``role`` and
    ``text``): what a new segment starts from.
    """

    seed: Callable[[], Awaitable[Any]]
    rotate_after_s: float | None = 3300.0
    rotate_grace_s: float = 240.0
    token_threshold: int | None = 100_000
    reconnect_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    rate_limited_backoff_s: float = 5.0


# An upstream that drops this soon after opening counts as flapping; after as many such drops
# in a row as reconnect attempts are allowed, the session ends instead of looping.
QUICK_DROP_S = 10.0
# Client frames held while a new upstream opens (about two minutes of PCM16 audio).
SWAP_BUFFER_MAX_CHARS = 8 * 1024 * 1024


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
        continuation: Continuation | None = None,
        tool_executor: ToolExecutor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.client = client
        self.recorder = recorder or NullRecorder()
        self._connect_upstream = connect_upstream
        self._max_duration_s = max_duration_s
        self._max_frame_chars = max_frame_chars
        self.spend_guard = spend_guard
        self.continuation = continuation
        self.tool_executor = tool_executor
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
        # Minute-metered sessions record a usage span at least every minute of audio.
        self._minute_bytes = (
            policy.input_bytes_per_ms * 60_000 if policy.is_minute_metered else float("inf")
        )
        self._excess_ms = 0.0
        self._last_error_report = 0.0
        self._sequence: dict[str, int] = {}
        self._budget_reached = False
        self._translation = ["", ""]  # source and translated text of the current utterance
        self._translations = 0
        self.response_active = False
        self._active_response_id = ""
        self._in_speech = False
        self._awaiting_answer = False
        # Segments: one upstream session each.
        self.segment = 0
        self.gaps_ms: list[float] = []
        self._pending_rotation = ""
        self._swap_task: asyncio.Task | None = None
        self._swapping = False
        self._swap_buffer: list[str] = []
        self._swap_buffer_chars = 0
        self._upstream_expired = False
        self._rotation_timer: asyncio.TimerHandle | None = None
        # Function calls: call id → state; responses whose calls still need outputs.
        self._calls: dict[str, ToolCall] = {}
        self._follow_ups: dict[str, set[str]] = {}
        self._finished_responses: set[str] = set()
        self._platform_response_pending = False
        self._segment_started = clock()
        self._quick_drops = 0

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream, configure it from the policy, and start relaying its events."""
        upstream = await self._connect_upstream()
        await upstream.send(frames.dumps(session_update_event(self.policy)))
        self.upstream = upstream
        self.upstream_session_id = await self._open_segment(upstream, initial=True)
        self.recorder.upstream_session(
            self.upstream_session_id, reason="initial", seed_summary="", gap_ms=None
        )
        self._pump_task = asyncio.create_task(self._pump(), name="realtime-bridge-pump")
        loop = asyncio.get_running_loop()
        if self._max_duration_s:
            self._deadline = loop.call_later(self._max_duration_s, self._on_max_duration)
        self._schedule_rotation()

    async def close(self, reason: str, *, code: int = CLOSE_NORMAL, message: str = "") -> None:
        """End the session: close the upstream at once (it bills while open), then the client."""
        if self.closed.is_set():
            return
        self.closed.set()
        self.end_reason = self.end_reason or reason
        for timer in (self._deadline, self._rotation_timer):
            if timer is not None:
                timer.cancel()
        tool_tasks = [call.task for call in self._calls.values() if call.task is not None]
        for task in (self._pump_task, self._swap_task, *tool_tasks):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.close()
        self._flush_translation()
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
        append = frames.append_audio(text)
        if append is not None and append[0] == self.policy.append_type:
            await self._client_audio(text, append[1])
            return
        event = frames.loads_object(text)
        if event is None:
            await self._client_error("invalid_json", "the frame is not a JSON object")
            return
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        item = event.get("item")
        if (
            event.get("type") == "conversation.item.create"
            and isinstance(item, dict)
            and item.get("type") == "function_call_output"
        ):
            await self._client_tool_output(event, item, event_id)
            return
        if event.get("type") == "response.create" and self.response_active:
            await self._client_error(
                "conversation_already_has_active_response",
                "a response is in progress; wait for response.done or send response.cancel",
                event_id=event_id,
            )
            return
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
        if forward.get("type") == self.policy.append_type:
            # An append that is not in the canonical shape (extra fields): re-serialise the
            # two fields that matter so that nothing else rides along.
            audio = forward.get("audio")
            if not isinstance(audio, str):
                await self._client_error("invalid_value", "audio must be a base64 string")
                return
            canonical = frames.dumps({"type": self.policy.append_type, "audio": audio})
            append = frames.append_audio(canonical)
            if append is None:
                await self._client_error("invalid_value", "audio must be base64", param="audio")
                return
            await self._client_audio(canonical, append[1])
            return
        await self._send_upstream(frames.dumps(forward))

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
        if self._swapping:
            self._hold(text)
        else:
            try:
                await self.upstream.send(text)
            except Exception:
                if self.continuation is not None and not self.closed.is_set():
                    self._hold(text)  # the pump is about to reconnect
        if self._audio_in_bytes - self._metered_in_bytes >= self._minute_bytes:
            self._meter_minutes()  # persist usage as it happens, not only at the end

    async def _send_upstream(self, text: str) -> None:
        """Forward a client frame; while a new upstream opens, hold it (in order) instead."""
        if self._swapping:
            self._hold(text)
            return
        try:
            await self.upstream.send(text)
        except Exception:
            if self.continuation is None or self.closed.is_set():
                return  # the pump reports the closed upstream to the client
            self._hold(text)  # the pump is about to reconnect: deliver it to the next upstream

    def _hold(self, text: str) -> None:
        if self._swap_buffer_chars + len(text) > SWAP_BUFFER_MAX_CHARS:
            logger.warning("swap buffer full: a client frame was dropped")
            return
        self._swap_buffer.append(text)
        self._swap_buffer_chars += len(text)

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
        send = self.client.send_text
        while True:
            upstream = self.upstream
            try:
                message = await upstream.recv()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the upstream connection ended or broke
                if self.closed.is_set() or not await self._continue_after(error):
                    return
                continue
            if not isinstance(message, str):
                continue
            event_type = frames.peek_type(message)
            if event_type in _AUDIO_DELTAS:
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
            if self._pending_rotation and self._idle():
                self._begin_swap(self._pending_rotation)

    def _on_upstream_event(self, event: dict[str, Any], message: str) -> str | None:
        event_type = event.get("type")
        if event_type in (
            "conversation.item.added",
            "conversation.item.created",
            "conversation.item.done",
        ):
            item_id = (event.get("item") or {}).get("id")
            if isinstance(item_id, str) and item_id.startswith(SEED_ITEM_PREFIX):
                return None  # a replayed turn of an earlier segment: the client has it
        if event_type in _AUDIO_DELTAS:  # an audio delta in an unusual key order
            delta = event.get("delta")
            if isinstance(delta, str) and delta:
                self._audio_out_bytes += frames.base64_decoded_bytes(len(delta), delta, len(delta))
            return message
        if event_type in ("session.created", "session.updated"):
            return frames.dumps(sanitize_session_event(self.policy, event))
        if event_type in ("conversation.item.added", "conversation.item.created"):
            self._on_item_added(event.get("item") or {})
        elif event_type == "conversation.item.done" and (event.get("item") or {}).get("type") == (
            "mcp_list_tools"
        ):
            self._on_output_item(event.get("item") or {})
        elif event_type == "conversation.item.input_audio_transcription.completed":
            self._on_user_transcript(event)
        elif event_type == "response.output_item.added":
            item = event.get("item") or {}
            self._sequence_of(item.get("id"))
        elif event_type == "response.output_item.done":
            self._on_output_item(event.get("item") or {}, event.get("response_id") or "")
        elif event_type == "response.created":
            self.response_active = True
            self._awaiting_answer = False
            self._active_response_id = (event.get("response") or {}).get("id") or ""
        elif event_type == "response.done":
            self.response_active = False
            self._active_response_id = ""
            self._platform_response_pending = False
            response = event.get("response") or {}
            self._on_response_done(response)
            if response.get("id"):
                self._finished_responses.add(response["id"])
            self._schedule_follow_up()
        elif event_type == "input_audio_buffer.speech_started":
            self._in_speech = True
        elif event_type == "input_audio_buffer.speech_stopped":
            # The turn stays open until its answer starts: a rotation now would lose it.
            self._in_speech = False
            self._awaiting_answer = self.policy.turn_detection != "none"
        elif event_type == "input_audio_buffer.committed":
            self._sequence_of(event.get("item_id"))
            self._meter_minutes()
        elif event_type == "session.input_transcript.delta":
            if self._translation[1]:  # a new utterance begins: store the previous pair
                self._flush_translation()
            self._translation[0] += event.get("delta") or ""
        elif event_type == "session.output_transcript.delta":
            self._translation[1] += event.get("delta") or ""
        elif event_type == "error":
            error = event.get("error") or {}
            if (
                error.get("code") == "conversation_already_has_active_response"
                and self._platform_response_pending
            ):
                # Our follow-up raced a response: it is asked for again at the next done.
                self._platform_response_pending = False
                self._follow_ups.setdefault("", set())
                return None
            if error.get("code") == "session_expired":
                self._upstream_expired = True
                if self.continuation is not None:
                    return None  # the conversation continues in a new segment
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
        self._sequence_of(item_id)  # its place in the conversation, even before it completes
        item_type = item.get("type")
        if item_type == "message" and item.get("role") in ("user", "system"):
            texts, images = [], 0
            for part in item.get("content") or []:
                if part.get("type") == "input_text":
                    texts.append(part.get("text") or "")
                elif part.get("type") == "input_image":
                    images += 1
            if texts or images:  # an audio item is recorded when its transcript completes
                self._record(
                    item_id=item_id,
                    role=item["role"],
                    kind="message",
                    text=" ".join(texts),
                    data={"images": images} if images else {},
                )
        elif item_type == "function_call_output" and not str(item_id).startswith(
            TOOL_OUTPUT_PREFIX
        ):
            self._record(
                item_id=item_id,
                role="tool",
                kind="function_call_output",
                text=str(item.get("output") or ""),
                data={"call_id": item.get("call_id")},
            )

    def _record(
        self, *, item_id: str, role: str, kind: str, text: str = "", data: dict | None = None
    ) -> None:
        """Hand a completed item to the recorder, at its place in the conversation."""
        self.recorder.transcript(
            TranscriptRecord(
                item_id=item_id,
                sequence=self._sequence_of(item_id),
                role=role,
                kind=kind,
                text=text,
                data=data or {},
            )
        )

    def _on_user_transcript(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        self._record(
            item_id=item_id,
            role="user",
            kind="message",
            text=event.get("transcript") or "",
        )

    def _on_output_item(self, item: dict[str, Any], response_id: str = "") -> None:
        item_id = item.get("id")
        item_type = item.get("type")
        if item_type == "message":
            texts = [
                part.get("transcript") or part.get("text") or ""
                for part in item.get("content") or []
            ]
            self._record(
                item_id=item_id,
                role="assistant",
                kind="message",
                text=" ".join(text for text in texts if text),
                data={"status": item.get("status")},
            )
        elif item_type == "function_call":
            self._record(
                item_id=item_id,
                role="assistant",
                kind="function_call",
                text=item.get("name") or "",
                data={
                    "name": item.get("name"),
                    "call_id": item.get("call_id"),
                    "arguments": item.get("arguments"),
                },
            )
            self._register_call(item, response_id)
        elif item_type in ("mcp_call", "mcp_list_tools"):
            self._record(
                item_id=item_id,
                role="tool",
                kind=item_type,
                text=item.get("name") or item.get("server_label") or "",
                data={
                    key: item.get(key)
                    for key in ("server_label", "name", "arguments", "output", "error", "tools")
                    if item.get(key) is not None
                },
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
        threshold = self.continuation.token_threshold if self.continuation else None
        input_tokens = (response.get("usage") or {}).get("input_tokens")
        if threshold and isinstance(input_tokens, int) and input_tokens >= threshold:
            self._pending_rotation = self._pending_rotation or "context_window"

    def _flush_translation(self) -> None:
        source, target = (part.strip() for part in self._translation)
        self._translation = ["", ""]
        if not (source or target):
            return
        item_id = f"translation_{self.segment}_{self._translations}"
        self._translations += 1
        self._record(
            item_id=item_id,
            role="assistant",
            kind="translation",
            text=target,
            data={"source": source, "language": self.policy.target_language},
        )

    def _meter_minutes(self, *, final: bool = False) -> None:
        """Minute-metered sessions (transcription, translation) bill the audio streamed."""
        if not self.policy.is_minute_metered or not self.upstream_session_id:
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

    # --- function tools ---------------------------------------------------------------------

    def _register_call(self, item: dict[str, Any], response_id: str) -> None:
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not call_id or call_id in self._calls:
            return
        tool = next((t for t in self.policy.tools if t.get("name") == name), None)
        webhook = (
            tool is not None
            and tool.get("execution") == "webhook"
            and self.tool_executor is not None
        )
        call = ToolCall(
            call_id=call_id,
            name=str(name),
            execution="webhook" if webhook else "client",
            response_id=response_id,
        )
        self._calls[call_id] = call
        self._follow_ups.setdefault(response_id, set()).add(call_id)
        if not webhook and self.policy.channel == CHANNEL_PHONE:
            # A phone cannot run client-side tools: close the call so the agent can go on.
            output = tools.error_output("unavailable", f"{name} is not available on phone calls")
            asyncio.get_running_loop().create_task(
                self._deliver_output(call, output, latency_ms=0, error="unavailable")
            )
        elif not webhook:
            # A client that never answers must not leave the conversation stuck.
            timeout = float((tool or {}).get("timeout_seconds") or tools.DEFAULT_TIMEOUT_S)
            call.task = asyncio.get_running_loop().create_task(
                self._expire_client_call(call, timeout)
            )
        if webhook:
            call.task = asyncio.get_running_loop().create_task(
                self._run_webhook(call, tool, item.get("arguments") or "")
            )

    async def _expire_client_call(self, call: ToolCall, timeout: float) -> None:
        await asyncio.sleep(timeout)
        output = tools.error_output("timeout", f"the client did not answer within {timeout:g} s")
        await self._deliver_output(call, output, latency_ms=round(timeout * 1000), error="timeout")

    async def _run_webhook(self, call: ToolCall, tool: dict[str, Any], arguments: str) -> None:
        result = await self.tool_executor.call(tool, call_id=call.call_id, arguments=arguments)
        await self._deliver_output(
            call, result.output, latency_ms=result.latency_ms, error=result.error
        )

    async def _client_tool_output(
        self, event: dict[str, Any], item: dict[str, Any], event_id: str | None
    ) -> None:
        """A client's output is accepted once, and only for a pending call it must answer."""
        call = self._calls.get(item.get("call_id"))
        if call is None or call.execution != "client" or call.answered:
            await self._client_error(
                "unknown_call_id",
                "function_call_output must answer a pending client-side call of this session",
                event_id=event_id,
                param="item.call_id",
            )
            return
        output = item.get("output")
        if not isinstance(output, str):
            await self._client_error(
                "invalid_value", "output must be a string", param="item.output"
            )
            return
        if call.task is not None:
            call.task.cancel()  # the client answered in time
        await self._deliver_output(call, output, latency_ms=None, error="")

    async def _deliver_output(
        self, call: ToolCall, output: str, *, latency_ms: int | None, error: str
    ) -> None:
        if call.answered or self.closed.is_set():
            return
        call.answered = True
        item_id = f"{TOOL_OUTPUT_PREFIX}{call.call_id}"[:64]
        data: dict[str, Any] = {"call_id": call.call_id, "name": call.name}
        if latency_ms is not None:
            data["latency_ms"] = latency_ms
        if error:
            data["error"] = error
        self._record(
            item_id=item_id,
            role="tool",
            kind="function_call_output",
            text=output,
            data=data,
        )
        event = {
            "type": "conversation.item.create",
            "item": {
                "id": item_id,
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": output,
            },
        }
        await self._send_upstream(frames.dumps(event))
        self._schedule_follow_up()

    def _schedule_follow_up(self) -> None:
        """One response.create once every call of a finished response has its output.

        Never while a response is active or the user is mid-turn (their own turn's response
        will see the outputs); retried at the next response.done.
        """
        ready = [
            response_id
            for response_id, call_ids in self._follow_ups.items()
            if (not response_id or response_id in self._finished_responses)
            and all(self._calls[call_id].answered for call_id in call_ids)
        ]
        if not ready or self.closed.is_set():
            return
        if self.response_active or self._in_speech or self._awaiting_answer or self._swapping:
            return
        for response_id in ready:
            del self._follow_ups[response_id]
        if self.policy.is_minute_metered or not self._spend_allows():
            return
        self._platform_response_pending = True
        asyncio.get_running_loop().create_task(
            self._send_upstream(frames.dumps({"type": "response.create"}))
        )

    # --- segments -------------------------------------------------------------------------

    async def _open_segment(self, upstream: Upstream, *, initial: bool) -> str:
        """Read the new upstream's ``session.created``; its id ("" if it sent something else).

        The first segment's ``session.created`` goes to the client; later ones do not (the
        client's session goes on).
        """
        message = await upstream.recv()
        event = frames.loads_object(message) if isinstance(message, str) else None
        if event is None or event.get("type") != "session.created":
            logger.warning("the upstream did not start with session.created")
            if event is not None and initial:
                outgoing = self._on_upstream_event(event, message)
                if outgoing is not None:
                    await self.client.send_text(outgoing)
            return ""
        session_id = (event.get("session") or {}).get("id")
        if initial:
            await self.client.send_text(frames.dumps(sanitize_session_event(self.policy, event)))
        return session_id if isinstance(session_id, str) else ""

    def _schedule_rotation(self) -> None:
        if self.continuation is None or not self.continuation.rotate_after_s:
            return
        loop = asyncio.get_running_loop()
        self._rotation_timer = loop.call_later(self.continuation.rotate_after_s, self._rotation_due)

    def _rotation_due(self) -> None:
        """Time to rotate: now if the line is quiet, else at the next quiet moment."""
        self._pending_rotation = self._pending_rotation or "max_duration"
        if self._idle():
            self._begin_swap(self._pending_rotation)
            return
        loop = asyncio.get_running_loop()
        self._rotation_timer = loop.call_later(
            self.continuation.rotate_grace_s, self._force_rotation
        )

    def _force_rotation(self) -> None:
        if self._pending_rotation and self._swap_task is None and not self.closed.is_set():
            self._begin_swap(self._pending_rotation)

    def _idle(self) -> bool:
        """A quiet moment: nobody speaking, no answer under way or about to start."""
        return not (
            self.response_active
            or self._in_speech
            or self._awaiting_answer
            or self._swapping
            or any(not call.answered for call in self._calls.values())
        )

    def _begin_swap(self, reason: str) -> None:
        if self._swap_task is None and not self.closed.is_set():
            self._swapping = True
            self._swap_task = asyncio.create_task(self._swap(reason), name="realtime-bridge-swap")

    async def _continue_after(self, error: BaseException) -> bool:
        """The upstream went away: wait for the swap under way, or start one. False: ended."""
        if self._swap_task is None:
            code, _ = _closed_details(error)
            expired = self._upstream_expired or code == CLOSE_GOING_AWAY
            if not self._may_reconnect():
                await self._on_upstream_closed(error)
                return False
            self._begin_swap("session_expired" if expired else "upstream_drop")
        task = self._swap_task
        try:
            continued = await task
        finally:
            if self._swap_task is task:
                self._swap_task = None
        return continued and not self.closed.is_set()

    def _may_reconnect(self) -> bool:
        """Reconnect after a drop, unless reconnecting is off or the upstream keeps flapping."""
        continuation = self.continuation
        if continuation is None or continuation.reconnect_attempts <= 0:
            return False
        if self._clock() - self._segment_started < QUICK_DROP_S:
            self._quick_drops += 1
        else:
            self._quick_drops = 0
        return self._quick_drops <= continuation.reconnect_attempts

    async def _swap(self, reason: str) -> bool:
        """Replace the upstream; the client's socket stays open. False when it could not."""
        started = self._clock()
        self._swapping = True
        self._pending_rotation = ""
        self._upstream_expired = False
        self._in_speech = self._awaiting_answer = False
        if self._rotation_timer is not None:
            self._rotation_timer.cancel()
        old = self.upstream
        with contextlib.suppress(Exception):
            await old.close()
        if self.response_active:  # cut off by a drop: close it for the client, unbilled
            self.response_active = False
            await self._client_event(
                {
                    "type": "response.done",
                    "event_id": "event_vp_" + secrets.token_hex(8),
                    "response": {
                        "id": self._active_response_id or "resp_unknown",
                        "object": "realtime.response",
                        "status": "cancelled",
                        "output": [],
                    },
                }
            )
        upstream = await self._reconnect()
        if upstream is None:
            return False
        summary, turns = "", []
        try:
            seed = await self.continuation.seed()
            summary, turns = seed.summary, list(seed.turns)
        except Exception:
            logger.exception("could not build the seed of a new segment; continuing without")
        segment = self.segment + 1
        try:
            await upstream.send(frames.dumps(session_update_event(self.policy, summary=summary)))
            for index, turn in enumerate(turns):
                event = seed_item_event(
                    role=turn.role, text=turn.text, segment=segment, index=index
                )
                await upstream.send(frames.dumps(event))
            upstream_session_id = await self._open_segment(upstream, initial=False)
        except Exception:
            logger.exception("the new upstream failed while being seeded")
            with contextlib.suppress(Exception):
                await upstream.close()
            await self._fail_reconnect("upstream_unavailable")
            return False
        self.segment = segment
        self.upstream = upstream
        self.upstream_session_id = upstream_session_id
        while self._swap_buffer:  # audio and events that arrived meanwhile, in order
            frame = self._swap_buffer.pop(0)
            self._swap_buffer_chars -= len(frame)
            await upstream.send(frame)
        self._swapping = False
        gap_ms = (self._clock() - started) * 1000
        self.gaps_ms.append(gap_ms)
        self._segment_started = self._clock()
        self.recorder.upstream_session(
            upstream_session_id, reason=reason, seed_summary=summary, gap_ms=round(gap_ms)
        )
        logger.info("segment %d (%s) ready after %.0f ms", segment, reason, gap_ms)
        if self.policy.channel == CHANNEL_WIDGET:
            await self._client_event(
                {"type": "vp.session.continued", "reason": reason, "segment": segment}
            )
        self._schedule_rotation()
        return True

    async def _reconnect(self) -> Upstream | None:
        """A new upstream, with backoff; 401/403 are final, 429 waits longer."""
        continuation = self.continuation
        delay = continuation.backoff_s
        code = "upstream_unavailable"
        for attempt in range(continuation.reconnect_attempts + 1):
            if self.closed.is_set():
                return None
            try:
                return await self._connect_upstream()
            except Exception as error:
                code, message, _ = upstream_failure(error)
                logger.warning("reconnect attempt %d failed: %s", attempt + 1, code)
                if code == "upstream_auth_failed" or attempt == continuation.reconnect_attempts:
                    break
                wait = delay
                if code == "upstream_rate_limited":
                    wait = max(delay, continuation.rate_limited_backoff_s)
                await self._client_error_event(
                    code, f"{message} Reconnecting in {wait:.1f} s.", error_type="server_error"
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, continuation.max_backoff_s)
        await self._fail_reconnect(code)
        return None

    async def _fail_reconnect(self, code: str) -> None:
        _, message, close_code = upstream_failure(code=code)
        await self._client_error_event(code, message, error_type="server_error")
        self._swapping = False
        await self.close("upstream_error", code=close_code, message=code)

    async def _client_event(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self.client.send_text(frames.dumps(event))

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
