"""The relay between one client socket and one upstream realtime session: the I/O shell.

``RealtimeBridge`` knows nothing of Channels or Django: the widget consumer, the API consumer,
the tests and the benchmark all drive it the same way. It reads both sockets and asks small
state machines (``agents.realtime.relay``) what to do:

* the upstream session is configured from the agent's policy (never from the client), and that
  configuration is folded into the ``session.created`` the client sees;
* client events are checked (``policy.client_event_filter``, OpenAI's session schemas);
  audio passes both ways without decoding, metered in the session's effective formats;
* upstream events are dispatched through one table; only the control events the relay needs
  are decoded (session, items, transcripts, ``response.done`` usage, calls, errors);
* what must be stored goes to a ``Recorder`` whose methods only enqueue;
* every ending goes through ``end()`` and the close table (``relay.closing``): one error
  event, one close code any server can send, the usage so far recorded. An exception in
  either direction ends the session that way instead of leaving a socket open;
* with a ``Continuation``, the conversation outlives its upstream sessions: before the
  provider's time limit, when the context fills, or when the upstream drops, a new upstream is
  seeded with a summary and the last turns while the client's audio is held, not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from agents.realtime import frames, tools
from agents.realtime.policy import (
    CHANNEL_API,
    CHANNEL_PHONE,
    CHANNEL_WIDGET,
    END_CALL,
    SEED_ITEM_PREFIX,
    TRANSFER_CALL,
    PolicyViolation,
    SessionPolicy,
    client_event_filter,
    sanitize_session_event,
    seed_item_event,
    session_update_event,
)
from agents.realtime.relay import metering
from agents.realtime.relay.calls import (
    CLIENT,
    PLATFORM_OUTPUT_PREFIX,
    UNAVAILABLE,
    WEBHOOK,
    Call,
    Calls,
    PlatformEvents,
)
from agents.realtime.relay.capture import AudioCapture
from agents.realtime.relay.closing import (
    CLOSE_BUDGET_EXHAUSTED,
    CLOSE_TABLE,
    ending,
    upstream_closed_details,
    upstream_failure_code,
)
from agents.realtime.relay.contracts import (
    CallControl,
    ClientSink,
    Continuation,
    NullRecorder,
    Recorder,
    SegmentRecord,
    SpendGuard,
    ToolExecutor,
    TranscriptRecord,
    Upstream,
    UsageRecord,
)
from agents.realtime.relay.metering import AudioMeter
from agents.realtime.relay.transcript import Transcript
from agents.realtime.relay.turns import TurnState
from agents.realtime.relay.widget_view import item_event_for_widget

__all__ = [
    "CLOSE_BUDGET_EXHAUSTED",
    "ClientSink",
    "Continuation",
    "RealtimeBridge",
    "Recorder",
    "SpendGuard",
    "ToolExecutor",
    "TranscriptRecord",
    "Upstream",
    "UsageRecord",
]

logger = logging.getLogger(__name__)

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
        "session.output_audio.delta",
    }
)
_AUDIO_DELTAS = frozenset({"response.output_audio.delta", "session.output_audio.delta"})
_ITEM_EVENTS = ("conversation.item.added", "conversation.item.created", "conversation.item.done")
ERROR_REPORT_INTERVAL_S = 1.0
# How long a new upstream may take to say session.created and to confirm the platform's update.
HANDSHAKE_TIMEOUT_S = 15.0
# How long the ending's error event and close may take to go out to a client.
CLOSE_SEND_TIMEOUT_S = 2.0
# An upstream that drops this soon after opening counts as flapping; after as many such drops
# in a row as reconnect attempts are allowed, the session ends instead of looping.
QUICK_DROP_S = 10.0
# Client frames held while a new upstream opens (about two minutes of PCM16 audio).
SWAP_BUFFER_MAX_CHARS = 8 * 1024 * 1024
# A response the spend caps refuse is cancelled; its response.done (billed by the provider) is
# awaited this long to be recorded before the session ends.
REFUSED_RESPONSE_GRACE_S = 2.0
# A built-in tool (end_call, transfer_call) runs once the agent's last words have been heard:
# their audio's length after it started, plus this margin for the client's playback buffer.
PLAYBACK_MARGIN_S = 0.5
PLAYBACK_WAIT_MAX_S = 30.0


class HandshakeError(Exception):
    """The upstream did not open the session as the protocol says."""


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
        max_client_message_chars: int | None = None,
        spend_guard: SpendGuard | None = None,
        continuation: Continuation | None = None,
        tool_executor: ToolExecutor | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_drop: Callable[[str], None] = lambda reason: None,
        capture: AudioCapture | None = None,
        call_control: CallControl | None = None,
    ) -> None:
        self.policy = policy
        self.call_control = call_control  # a phone call's transfer (Twilio), else None
        # The session's audio, both sides, handed to a recording writer (never waited for).
        self.capture = capture
        self.client = client
        self.recorder = recorder or NullRecorder()
        self._connect_upstream = connect_upstream
        self._max_duration_s = max_duration_s
        self._max_frame_chars = max_frame_chars
        self._max_client_chars = max_client_message_chars or 2 * max_frame_chars
        self.spend_guard = spend_guard
        self.continuation = continuation
        self.tool_executor = tool_executor
        self._clock = clock
        self._on_drop = on_drop  # a frame dropped instead of forwarded, by reason (metrics)
        self.upstream: Upstream | None = None
        self.upstream_session_id = ""
        self.end_reason = ""
        self.closed = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._last_error_report = 0.0
        self._budget_reached = False
        # A response the upstream started while the caps were spent (server VAD): cancelled,
        # nothing of it relayed, its response.done awaited for the ledger, then the end.
        self._refused_response: str | None = None
        self._ending = False
        self._ending_task: asyncio.Task[None] | None = None  # kept referenced until it is done
        # The parts that hold state.
        self.meter = AudioMeter(
            input_bytes_per_ms=policy.input_bytes_per_ms,
            output_bytes_per_ms=policy.output_bytes_per_ms,
            burst_ms=policy.audio_burst_ms,
            clock=clock,
        )
        self.turns = TurnState(vad_answers=policy.turn_detection != "none")
        self.calls = Calls(
            tools=policy.tools,
            webhooks=tool_executor is not None,
            phone=policy.channel == CHANNEL_PHONE,
        )
        self._own_events = PlatformEvents()
        self._call_tasks: dict[str, asyncio.Task[None]] = {}
        self._held_response_create: str | None = None
        self.transcript = Transcript(target_language=policy.target_language)
        # Time to first answer audio: from when the user's turn ended (speech_stopped, or the
        # client's commit without server VAD) to the answer's first audio delta, per turn.
        self._turn_ended_at: float | None = None
        self.answer_latencies_ms: list[int] = []
        # Segments: one upstream session each.
        self.segment = 0
        self.gaps_ms: list[float] = []
        self._pending_rotation = ""
        self._swap_task: asyncio.Task[bool] | None = None
        self._swapping = False
        self._swap_buffer: list[str] = []
        self._swap_buffer_chars = 0
        self._upstream_expired = False
        self._rotation_timer: asyncio.TimerHandle | None = None
        self._segment_started = clock()
        self._quick_drops = 0
        # When the agent's audio of the current response started (clock, output ms so far).
        self._speech_started_at = (clock(), 0)
        # A built-in tool (end_call, transfer_call) waits for the last words to be heard: no
        # new response may start meanwhile.
        self._handing_off = False

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> bool:
        """Open and configure the upstream, greet the client, relay. False: the session ended
        (the client has its error event and close)."""
        if not self._spend_allows():
            # The caps are spent already (another session crossed them): no upstream is opened,
            # so nothing (a response started by server VAD included) can be served or billed.
            await self.end("budget_exhausted")
            return False
        try:
            upstream = await self._connect_upstream()
        except Exception as error:
            logger.warning("upstream connection failed: %s", type(error).__name__)
            await self.end(upstream_failure_code(error))
            return False
        self.upstream = upstream
        try:
            created, early = await self._handshake(upstream)
        except Exception as error:
            logger.warning("upstream handshake failed: %r", error)
            await self.end("upstream_unavailable")
            return False
        self.upstream_session_id = str((created.get("session") or {}).get("id") or "")
        self.recorder.record_segment(SegmentRecord(self.upstream_session_id, "initial"))
        await self._send_client(frames.dumps(created))
        for message in early:
            await self._relay_upstream(message)
        await self._open_conversation()
        self._pump_task = asyncio.create_task(self._pump(), name="realtime-bridge-pump")
        loop = asyncio.get_running_loop()
        if self._max_duration_s:
            self._timers.append(
                loop.call_later(self._max_duration_s, self._end_soon, "session_max_duration")
            )
        self._schedule_rotation()
        return True

    async def _open_conversation(self) -> None:
        """An agent that speaks first opens with its first message, and a recorded phone call
        with its notice (both: the notice, then the message): one response asked for by the
        platform, with instructions for that response only (the session's instructions stay
        for the rest of the conversation). An agent that waits sends nothing: the user's
        first turn starts the conversation."""
        opening = self.policy.opening
        if opening is None or not self._spend_allows():
            return
        await self._send_own({"type": "response.create", "response": opening})

    async def _handshake(
        self, upstream: Upstream, *, summary: str | None = None, seed: Sequence[Any] = ()
    ) -> tuple[dict[str, Any], list[str]]:
        """session.created → the platform's session.update (+ seed items) → session.updated.

        Returns the ``session.created`` the client should see (the configured session, as
        sanitised for it) and any other events that arrived meanwhile, in order. The upstream's
        answer to the platform's own update is not relayed: the client did not ask for it.
        """
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            created = frames.loads_object(await upstream.recv())
            if created is None or created.get("type") != "session.created":
                raise HandshakeError("the upstream did not start with session.created")
            update = session_update_event(self.policy, summary=summary)
            update["event_id"] = self._own_events.new_id()
            await upstream.send(frames.dumps(update))
            for index, turn in enumerate(seed):
                seed_event = seed_item_event(
                    role=turn.role, text=turn.text, segment=self.segment + 1, index=index
                )
                seed_event["event_id"] = self._own_events.new_id()
                await upstream.send(frames.dumps(seed_event))
            early: list[str] = []
            while True:
                message = await upstream.recv()
                if not isinstance(message, str):
                    continue
                event = frames.loads_object(message)
                if event is None:
                    continue
                if event.get("type") == "session.updated":
                    session = event.get("session")
                    break
                if event.get("type") == "error" and self._own_events.answers_ours(
                    event.get("error") or {}
                ):
                    logger.error("the upstream refused the platform's session: %s", message)
                    session = created.get("session")
                    break
                early.append(message)
        if isinstance(session, dict):
            session = {**session, "id": (created.get("session") or {}).get("id")}
            self._apply_session(session)
        greeting = sanitize_session_event(self.policy, {**created, "session": session})
        return greeting, early

    async def end(self, code: str, message: str = "") -> None:
        """End the session as the close table says: one error event, then the close.

        The upstream is closed and the usage recorded first: a client that cannot take the
        error event (it stopped reading) must not keep the upstream open.
        """
        if self.closed.is_set() or self._ending:
            return
        self._ending = True
        row = ending(code)
        if code not in CLOSE_TABLE:
            logger.error("no close table row for %r: ending as internal_error", code)
        self.end_reason = self.end_reason or row.end_reason
        await self._teardown()
        error = frames.error_event(row.code, message or row.message, error_type=row.error_type)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_SEND_TIMEOUT_S):
                if row.error_type:  # a normal ending (the agent hung up) is no error
                    await self.client.send_text(frames.dumps(error))
                await self.client.close(row.close_code, row.code)

    async def close(self, reason: str = "client_closed") -> None:
        """The client is gone (or its consumer is): stop everything, tell nobody."""
        if self.closed.is_set():
            return
        self._ending = True
        self.end_reason = self.end_reason or reason
        await self._teardown()

    async def _teardown(self) -> None:
        """Close the upstream at once (it bills while open) and record what was used."""
        self.closed.set()
        for timer in (*self._timers, self._rotation_timer):
            if timer is not None:
                timer.cancel()
        for task in (self._pump_task, self._swap_task, *self._call_tasks.values()):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self.upstream is not None:
            with contextlib.suppress(Exception):
                await self.upstream.close()
        self._record(self.transcript.flush_translation(segment=self.segment))
        self._meter_minutes(final=True)
        self.recorder.record_audio(in_ms=self.audio_in_ms, out_ms=self.audio_out_ms)
        if self.capture is not None:
            self.capture.close()

    def _end_soon(self, code: str) -> None:
        self._ending_task = asyncio.get_running_loop().create_task(self.end(code))

    async def wait_closed(self) -> None:
        await self.closed.wait()
        if self._pump_task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task

    @property
    def audio_in_ms(self) -> int:
        return self.meter.in_ms

    @property
    def audio_out_ms(self) -> int:
        return self.meter.out_ms

    @property
    def first_audio_ms(self) -> int | None:
        """Time to first answer audio of the session: the median over its answered turns."""
        if not self.answer_latencies_ms:
            return None
        return int(statistics.median_low(self.answer_latencies_ms))

    @property
    def response_active(self) -> bool:
        return self.turns.response_active

    # --- client → upstream ----------------------------------------------------------------

    async def from_client(self, text: str | None = None, data: bytes | None = None) -> None:
        """Handle one client frame. Bad input gets an ``error`` event; the session goes on."""
        if self.closed.is_set() or self._ending or self.upstream is None:
            return
        try:
            if text is not None and len(text) <= self._max_frame_chars:
                append = frames.append_audio(text)
                if append is not None and append[0] == self.policy.append_type:
                    await self._client_audio(text, append[1])  # the hot path
                    return
            await self._from_client(text)
        except Exception:
            logger.exception("a client event could not be handled")
            await self._client_error("internal_error", "the event could not be handled")

    async def _from_client(self, text: str | None) -> None:
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
            and not self.policy.is_minute_metered
        ):
            await self._client_tool_output(event, item, event_id)
            return
        if event.get("type") == "response.create" and self.turns.response_active:
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
        forward_type = forward.get("type")
        if forward_type == "response.create":
            await self._client_response_create(forward, event_id)
            return
        if forward_type == self.policy.append_type:
            await self._client_append(forward)
            return
        if forward_type == "conversation.item.truncate" and self.capture is not None:
            self._capture_truncate(forward)
        if forward_type == "conversation.item.create" and self.policy.channel == CHANNEL_API:
            if isinstance(item, dict) and item.get("type") == "function_call":
                self.calls.on_client_item(item)  # history: its output is the client's to send
        await self._send_upstream(frames.dumps(forward))

    async def _client_append(self, forward: dict[str, Any]) -> None:
        """An append not in the canonical shape (extra fields): re-serialise the two fields
        that matter so that nothing else rides along."""
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

    def _capture_truncate(self, event: dict[str, Any]) -> None:
        item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
        if self.capture is not None and isinstance(item_id, str) and isinstance(end_ms, int):
            self.capture.truncated(item_id, end_ms, self.meter.in_ms)

    async def _client_response_create(self, forward: dict[str, Any], event_id: str | None) -> None:
        if self._handing_off:
            await self._client_error(
                "call_ending",
                "the agent is ending or transferring the call; no new response can start",
                event_id=event_id,
            )
            return
        if not self._spend_allows():
            await self._client_error(
                "budget_exhausted",
                "the spending limit is reached; no new responses can start",
                event_id=event_id,
            )
            return
        if self.calls.platform_work_pending:
            # A webhook of this turn is still running: the model must see its output too.
            self._held_response_create = frames.dumps(forward)
            return
        await self._send_upstream(frames.dumps(forward))

    async def _client_audio(self, text: str, audio_bytes: int) -> None:
        verdict = self.meter.admit(audio_bytes)
        if verdict == metering.FLOOD:
            # Ended beside the client's receive loop, which must go on draining the socket:
            # some servers (uvicorn) complete a close only once the application reads again.
            self._ending_task = asyncio.get_running_loop().create_task(self.end("audio_flood"))
            return
        if verdict == metering.DROP:
            self._on_drop("audio_rate_exceeded")
            await self._client_error(
                "audio_rate_exceeded",
                "audio is arriving faster than real time; the frame was dropped",
                rate_limited=True,
            )
            return
        if self.capture is not None:
            self.capture.caller_audio(text, self.meter.in_ms)
        await self._send_upstream(text)
        if self.policy.is_minute_metered and self.meter.minute_due():
            self._meter_minutes()  # persist usage as it happens, not only at the end

    async def _send_upstream(self, text: str) -> None:
        """Forward a client frame; while a new upstream opens, hold it (in order) instead."""
        if self._swapping:
            self._hold(text)
            return
        try:
            assert self.upstream is not None  # set by start() before any client frame
            await self.upstream.send(text)
        except Exception:
            if self.continuation is None or self.closed.is_set():
                return  # the pump reports the closed upstream to the client
            self._hold(text)  # the pump is about to reconnect: deliver it to the next upstream

    async def _send_own(self, event: dict[str, Any]) -> None:
        """An event the platform sends on its own account: its errors are the platform's."""
        event["event_id"] = self._own_events.new_id()
        await self._send_upstream(frames.dumps(event))

    def _hold(self, text: str) -> None:
        if self._swap_buffer_chars + len(text) > SWAP_BUFFER_MAX_CHARS:
            logger.warning("swap buffer full: a client frame was dropped")
            self._on_drop("swap_buffer_full")
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
        error_type: str = "invalid_request_error",
    ) -> None:
        if rate_limited:
            now = self._clock()
            if now - self._last_error_report < ERROR_REPORT_INTERVAL_S:
                return
            self._last_error_report = now
        event = frames.error_event(
            code, message, event_id=event_id, param=param, error_type=error_type
        )
        await self._send_client_quietly(frames.dumps(event))

    # --- upstream → client ----------------------------------------------------------------

    async def _pump(self) -> None:
        """Relay upstream events until the session ends; any failure ends it with a close."""
        try:
            while not self.closed.is_set():
                upstream = self.upstream
                try:
                    assert upstream is not None  # set by start() before the pump starts
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
                if event_type in _AUDIO_DELTAS and self._refused_response is None:
                    # The hot path: no decode, no extra await.
                    if self._turn_ended_at is not None:
                        self._answer_audio_started()
                    self.meter.add_output(frames.delta_bytes(message))
                    if self.capture is not None:
                        self.capture.agent_audio(message, self.meter.in_ms)
                    if len(message) <= self._max_client_chars:
                        await self.client.send_text(message)
                        continue
                await self._relay_upstream(message, event_type)
                if self._spend_ends_session():
                    await self.end("budget_exhausted")
                    return
                if self._pending_rotation and self._idle():
                    self._begin_swap(self._pending_rotation)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("the relay failed; ending the session")
            await self.end("internal_error")

    async def _relay_upstream(self, message: str, event_type: str | None = "") -> None:
        if self._refused_response is not None:
            await self._while_refused(message)
            return
        if event_type == "":
            event_type = frames.peek_type(message)
            if event_type in _AUDIO_DELTAS:
                if self._turn_ended_at is not None:
                    self._answer_audio_started()
                self.meter.add_output(frames.delta_bytes(message))
                if self.capture is not None:
                    self.capture.agent_audio(message, self.meter.in_ms)
        if event_type in _AUDIO_DELTAS or event_type in _RELAY_ONLY:
            await self._send_client(message)
            return
        event = frames.loads_object(message)
        if event is None:
            logger.warning("upstream sent a frame that is not a JSON object")
            return
        handler = self._UPSTREAM_HANDLERS.get(event.get("type", ""), RealtimeBridge._on_other)
        outgoing = handler(self, event, message)
        if self._refused_response is not None:  # this event started a response nobody may pay
            await self._refuse_response()
            return
        if outgoing is not None:
            await self._send_client(outgoing)
        await self._maybe_follow_up()

    # --- spend caps -------------------------------------------------------------------------

    def _spend_ends_session(self) -> bool:
        """Once a cap is spent the session ends: at the response.done that crossed it, or at the
        next control event (a cap read as spent elsewhere), so that no response starts."""
        if self._budget_reached:
            return True
        return not self.turns.response_active and not self._spend_allows()

    async def _refuse_response(self) -> None:
        """The upstream started a response (server VAD) while the caps were spent: cancel it,
        relay nothing of it, and end once its response.done is billed (or after a grace)."""
        logger.info("response %s refused: the spending limit is reached", self._refused_response)
        await self._send_own({"type": "response.cancel"})
        loop = asyncio.get_running_loop()
        self._timers.append(
            loop.call_later(REFUSED_RESPONSE_GRACE_S, self._end_soon, "budget_exhausted")
        )

    async def _while_refused(self, message: str) -> None:
        """Drop everything of the refused response; its response.done is recorded (the provider
        bills a cancelled response too), then the session ends."""
        if frames.peek_type(message) != "response.done":
            return
        event = frames.loads_object(message) or {}
        self._on_response_done(event, message)
        await self.end("budget_exhausted")

    # Each handler takes the decoded event and its text; it returns what the client gets.

    def _on_other(self, event: dict[str, Any], message: str) -> str | None:
        return message

    def _on_audio_delta(self, event: dict[str, Any], message: str) -> str | None:
        delta = event.get("delta")  # an audio delta in an unusual key order
        if isinstance(delta, str) and delta:
            if self._turn_ended_at is not None:
                self._answer_audio_started()
            self.meter.add_output(frames.base64_decoded_bytes(len(delta), delta, len(delta)))
            if self.capture is not None:
                self.capture.agent_audio(message, self.meter.in_ms)
        return message

    def _answer_audio_started(self) -> None:
        """The first audio of the answer to the user's last turn: how long it took."""
        assert self._turn_ended_at is not None
        waited = max(self._clock() - self._turn_ended_at, 0.0)
        self.answer_latencies_ms.append(round(waited * 1000))
        self._turn_ended_at = None

    def _on_session(self, event: dict[str, Any], message: str) -> str | None:
        self._apply_session(event.get("session"))
        return frames.dumps(sanitize_session_event(self.policy, event))

    def _apply_session(self, session: Any) -> None:
        self.meter.apply_session(session)
        if self.capture is not None and isinstance(session, dict):
            audio = session.get("audio") or {}
            if isinstance(audio, dict):
                self.capture.formats(
                    (audio.get("input") or {}).get("format"),
                    (audio.get("output") or {}).get("format"),
                )
        self.turns.on_session(session)
        if self.policy.is_translation and isinstance(session, dict):
            language = ((session.get("audio") or {}).get("output") or {}).get("language")
            if isinstance(language, str) and language:
                self.transcript.target_language = language

    def _on_item(self, event: dict[str, Any], message: str) -> str | None:
        item = event.get("item")
        if not isinstance(item, dict):
            return message
        if str(item.get("id") or "").startswith(SEED_ITEM_PREFIX):
            return None  # a replayed turn of an earlier segment: the client has it
        if event["type"] == "conversation.item.done":
            if item.get("type") == "mcp_list_tools":
                self._record(self.transcript.on_output_item(item))
        else:
            self._record(self.transcript.on_item_added(item))
        return self._as_the_client_may_see(event, message)

    def _as_the_client_may_see(self, event: dict[str, Any], message: str) -> str:
        """A widget is not told what a tenant's servers answered (relay.widget_view)."""
        if self.policy.channel != CHANNEL_WIDGET:
            return message
        changed = item_event_for_widget(event, answered_by_platform=self._answered_by_platform)
        return message if changed is None else frames.dumps(changed)

    def _answered_by_platform(self, call_id: str) -> bool:
        call = self.calls.get(call_id)
        return call is not None and call.answered and not call.answered_by_client

    def _on_user_transcript(self, event: dict[str, Any], message: str) -> str | None:
        self._record(self.transcript.on_user_transcript(event))
        return message

    def _on_output_item_added(self, event: dict[str, Any], message: str) -> str | None:
        item = event.get("item")
        if isinstance(item, dict) and item.get("type") == "message":
            self._speech_started_at = (self._clock(), self.meter.out_ms)
        if isinstance(item, dict):
            self.transcript.place(item.get("id"))
            if self.capture is not None and isinstance(item.get("id"), str):
                self.capture.mark(item["id"], self.meter.in_ms, agent=True)
        return self._as_the_client_may_see(event, message)

    def _on_output_item_done(self, event: dict[str, Any], message: str) -> str | None:
        item = event.get("item")
        if not isinstance(item, dict):
            return message
        self._record(self.transcript.on_output_item(item))
        if item.get("type") == "function_call":
            call = self.calls.on_model_call(item, str(event.get("response_id") or ""))
            if call is not None:
                self._start_call(call, str(item.get("arguments") or ""))
        return self._as_the_client_may_see(event, message)

    def _on_response_created(self, event: dict[str, Any], message: str) -> str | None:
        response = event.get("response")
        if not isinstance(response, dict):
            response = {}
        self.turns.on_response_created(response)
        if self.capture is not None:
            self.capture.response_started(self.meter.in_ms)
        if not self._spend_allows():
            # Not asked for through response.create (refused there): server VAD started it.
            self._refused_response = str(response.get("id") or "")
            return None
        return message

    def _on_response_done(self, event: dict[str, Any], message: str) -> str | None:
        self.turns.on_response_done()
        response = event.get("response") or {}
        response_id = response.get("id")
        if isinstance(response_id, str) and response_id:
            self._bill_response(response_id, response)
            self.calls.on_response_done(response_id)
            for call in self.calls.builtin_calls_of(response_id)[:1]:
                self._handing_off = True
                loop = asyncio.get_running_loop()
                self._call_tasks[call.call_id] = loop.create_task(self._run_builtin(call))
        else:
            logger.warning("response.done without an id: its usage cannot be keyed")
        return message

    def _on_speech_started(self, event: dict[str, Any], message: str) -> str | None:
        self._turn_ended_at = None  # the user speaks again: the next answer is to a new turn
        self.turns.on_speech_started()
        if self.capture is not None:
            self.capture.speech_started(self.meter.in_ms)
        return message

    def _on_speech_stopped(self, event: dict[str, Any], message: str) -> str | None:
        # The turn stays open until its answer starts: a rotation now would lose it.
        self._turn_ended_at = self._clock()
        self.turns.on_speech_stopped()
        return message

    def _on_committed(self, event: dict[str, Any], message: str) -> str | None:
        if self._turn_ended_at is None:
            # Push to talk: the commit ends the turn (with server VAD, speech_stopped came first).
            self._turn_ended_at = self._clock()
        self.transcript.place(event.get("item_id"))
        if self.capture is not None and isinstance(event.get("item_id"), str):
            self.capture.mark(event["item_id"], self.meter.in_ms)
        self._meter_minutes()
        return message

    def _on_source_delta(self, event: dict[str, Any], message: str) -> str | None:
        self._record(self.transcript.on_source_delta(event.get("delta"), segment=self.segment))
        return message

    def _on_target_delta(self, event: dict[str, Any], message: str) -> str | None:
        self.transcript.on_target_delta(event.get("delta"))
        return message

    def _on_error(self, event: dict[str, Any], message: str) -> str | None:
        error = event.get("error")
        if not isinstance(error, dict):
            error = {}
        if self._own_events.answers_ours(error):
            # The answer to the platform's own request: the client did not send it.
            if error.get("code") == "conversation_already_has_active_response":
                self.calls.follow_up_refused()  # asked again at the next response.done
            else:
                logger.warning("the upstream refused a platform event: %s", message[:500])
            return None
        if error.get("code") == "session_expired":
            self._upstream_expired = True
            if self.continuation is not None:
                return None  # the conversation continues in a new segment
            self.end_reason = "session_expired"
        return message

    _UPSTREAM_HANDLERS: dict[str, Callable[[RealtimeBridge, dict[str, Any], str], str | None]] = {
        "response.output_audio.delta": _on_audio_delta,
        "session.output_audio.delta": _on_audio_delta,
        "session.created": _on_session,
        "session.updated": _on_session,
        "conversation.item.added": _on_item,
        "conversation.item.created": _on_item,
        "conversation.item.done": _on_item,
        "conversation.item.input_audio_transcription.completed": _on_user_transcript,
        "response.output_item.added": _on_output_item_added,
        "response.output_item.done": _on_output_item_done,
        "response.created": _on_response_created,
        "response.done": _on_response_done,
        "input_audio_buffer.speech_started": _on_speech_started,
        "input_audio_buffer.speech_stopped": _on_speech_stopped,
        "input_audio_buffer.committed": _on_committed,
        "session.input_transcript.delta": _on_source_delta,
        "session.output_transcript.delta": _on_target_delta,
        "error": _on_error,
    }

    async def _send_client(self, text: str) -> None:
        """Send to the client; an event too large for its socket loses its audio, never the
        session."""
        if len(text) > self._max_client_chars:
            text = self._fit_for_client(text)
        await self.client.send_text(text)

    async def _send_client_quietly(self, text: str) -> None:
        with contextlib.suppress(Exception):
            await self.client.send_text(text)

    def _fit_for_client(self, text: str) -> str:
        event = frames.loads_object(text) or {}
        stripped = _without_audio(event)
        if stripped is not None:
            fitted = frames.dumps(stripped)
            if len(fitted) <= self._max_client_chars:
                logger.info("%s: audio omitted for the client (too large)", event.get("type"))
                return fitted
        logger.warning("%s of %d characters dropped: too large", event.get("type"), len(text))
        self._on_drop("event_too_large")
        return frames.dumps(
            frames.error_event(
                "event_too_large",
                f"a {event.get('type') or 'server'} event of {len(text)} characters was too large "
                f"for this socket ({self._max_client_chars}) and was dropped",
                error_type="server_error",
            )
        )

    def _record(self, record: TranscriptRecord | None) -> None:
        if record is not None:
            self.recorder.record_transcript(record)
            if self.capture is not None and record.item_id:
                # Where the console seeks to (the first mark of an item wins: the turn's start).
                agent = record.role == "assistant"
                self.capture.mark(record.item_id, self.meter.in_ms, agent=agent)

    def _bill_response(self, response_id: str, response: dict[str, Any]) -> None:
        usage = response.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        record = UsageRecord(
            key=response_id,
            model=self.policy.model,
            status=str(response.get("status") or ""),
            usage=usage,
        )
        self.recorder.record_usage(record)
        if self.spend_guard is not None and not self.spend_guard.on_usage(record):
            self._budget_reached = True
        threshold = self.continuation.token_threshold if self.continuation else None
        input_tokens = usage.get("input_tokens")
        if threshold and isinstance(input_tokens, int) and input_tokens >= threshold:
            self._pending_rotation = self._pending_rotation or "context_window"

    def _meter_minutes(self, *, final: bool = False) -> None:
        """Minute-metered sessions (transcription, translation) bill the audio streamed."""
        if not self.policy.is_minute_metered or not self.upstream_session_id:
            return
        span, total = self.meter.take_span()
        if span <= 0:
            return
        self.recorder.record_usage(
            UsageRecord(
                key=f"{self.upstream_session_id}:audio:{total}ms",
                model=self.policy.model,
                status="final" if final else "committed",
                audio_ms=span,
            )
        )

    # --- function tools ---------------------------------------------------------------------

    def _start_call(self, call: Call, arguments: str) -> None:
        loop = asyncio.get_running_loop()
        if call.answerer == WEBHOOK:
            self._call_tasks[call.call_id] = loop.create_task(self._run_webhook(call, arguments))
        elif call.answerer == UNAVAILABLE:
            output = tools.error_output("unavailable", f"{call.name} is not available here")
            self._call_tasks[call.call_id] = loop.create_task(
                self._deliver_output(call, output, latency_ms=0, error="unavailable")
            )
        elif call.answerer == CLIENT:
            # A client that never answers must not leave the conversation stuck.
            timeout = float((call.tool or {}).get("timeout_seconds") or tools.DEFAULT_TIMEOUT_S)
            self._call_tasks[call.call_id] = loop.create_task(self._expire_call(call, timeout))

    def _unheard_s(self) -> float:
        """How long the client still plays the agent's last answer (real time from its start)."""
        started, out_ms_before = self._speech_started_at
        heard_by = started + (self.meter.out_ms - out_ms_before) / 1000
        return min(max(0.0, heard_by - self._clock()) + PLAYBACK_MARGIN_S, PLAYBACK_WAIT_MAX_S)

    async def _run_builtin(self, call: Call) -> None:
        """``end_call``: the session ends once the goodbye is heard (a normal close; a phone
        call hangs up). ``transfer_call``: the phone call is redirected to the agent's number,
        which ends its media stream; a failed transfer is the model's to tell the caller."""
        try:
            await asyncio.sleep(self._unheard_s())
            if self.closed.is_set():
                return
            await self._run_builtin_now(call)
        finally:
            self._handing_off = False

    async def _run_builtin_now(self, call: Call) -> None:
        if call.name == END_CALL:
            logger.info("the agent ended the call (%s)", call.call_id)
            await self.end("call_ended")
            return
        if call.name == TRANSFER_CALL and self.call_control and self.policy.transfer_number:
            error = await self.call_control.transfer(self.policy.transfer_number)
            if error is None:
                logger.info("the call was transferred (%s)", call.call_id)
                await self.end("call_transferred")
                return
        else:
            error = f"{call.name} is not available here"
        logger.warning("built-in tool %s failed: %s", call.name, error)
        self._handing_off = False  # the conversation goes on: the model tells the caller
        await self._deliver_output(
            call, tools.error_output("failed", error), latency_ms=None, error="failed"
        )

    async def _expire_call(self, call: Call, timeout: float) -> None:
        await asyncio.sleep(timeout)
        output = tools.error_output("timeout", f"the client did not answer within {timeout:g} s")
        await self._deliver_output(call, output, latency_ms=round(timeout * 1000), error="timeout")

    async def _run_webhook(self, call: Call, arguments: str) -> None:
        # Calls makes WEBHOOK calls only for a defined tool, and only when webhooks are on.
        assert self.tool_executor is not None and call.tool is not None
        result = await self.tool_executor.call(call.tool, call_id=call.call_id, arguments=arguments)
        await self._deliver_output(
            call, result.output, latency_ms=result.latency_ms, error=result.error
        )

    async def _client_tool_output(
        self, event: dict[str, Any], item: dict[str, Any], event_id: str | None
    ) -> None:
        """The client answers a call that is its own: forwarded as sent, its item id kept."""
        call_id = item.get("call_id")
        if not self.calls.client_may_answer(call_id):
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
                "invalid_value", "output must be a string", event_id=event_id, param="item.output"
            )
            return
        call = self.calls.get(call_id)
        assert call is not None  # client_may_answer found it
        self.calls.answered(call, by_client=True)
        task = self._call_tasks.pop(call_id, None)
        if task is not None:
            task.cancel()  # the client answered in time
        forward_item = {"type": "function_call_output", "call_id": call_id, "output": output}
        if isinstance(item.get("id"), str):
            forward_item = {"id": item["id"], **forward_item}
        forward: dict[str, Any] = {"type": "conversation.item.create", "item": forward_item}
        if event_id is not None:
            forward["event_id"] = event_id
        if isinstance(event.get("previous_item_id"), str):
            forward["previous_item_id"] = event["previous_item_id"]
        await self._send_upstream(frames.dumps(forward))

    async def _deliver_output(
        self, call: Call, output: str, *, latency_ms: int | None, error: str
    ) -> None:
        """An output the platform gives (webhook result, timeout, unavailable)."""
        if self.closed.is_set() or not self.calls.answered(call, by_client=False):
            return
        self._call_tasks.pop(call.call_id, None)
        item_id = f"{PLATFORM_OUTPUT_PREFIX}{call.call_id}"[:64]
        data: dict[str, Any] = {"call_id": call.call_id, "name": call.name}
        if latency_ms is not None:
            data["latency_ms"] = latency_ms
        if error:
            data["error"] = error
        self._record(
            self.transcript.record(
                item_id=item_id, role="tool", kind="function_call_output", text=output, data=data
            )
        )
        await self._send_own(
            {
                "type": "conversation.item.create",
                "item": {
                    "id": item_id,
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": output,
                },
            }
        )
        await self._maybe_follow_up()

    async def _maybe_follow_up(self) -> None:
        """Release a held client response.create, or ask for the follow-up the platform owes.

        Never while a response is active, the user is mid-turn, or a new upstream opens.
        """
        if self.closed.is_set() or self._swapping or self.turns.busy or self._handing_off:
            return
        if self.calls.platform_work_pending:
            return
        held, self._held_response_create = self._held_response_create, None
        due = self.calls.follow_up_due()
        if held is not None:
            await self._send_upstream(held)  # the client asked; the platform adds nothing
        elif due and not self.policy.is_minute_metered and self._spend_allows():
            await self._send_own({"type": "response.create"})

    # --- segments -------------------------------------------------------------------------

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
        assert self.continuation is not None  # scheduled by _schedule_rotation only with one
        loop = asyncio.get_running_loop()
        self._rotation_timer = loop.call_later(
            self.continuation.rotate_grace_s, self._force_rotation
        )

    def _force_rotation(self) -> None:
        if self._pending_rotation and self._swap_task is None and not self.closed.is_set():
            self._begin_swap(self._pending_rotation)

    def _idle(self) -> bool:
        """A quiet moment: nobody speaking, no answer under way or about to start."""
        return not (self.turns.busy or self._swapping or self.calls.pending())

    def _begin_swap(self, reason: str) -> None:
        if self._swap_task is None and not self.closed.is_set():
            self._swapping = True
            self._swap_task = asyncio.create_task(self._swap(reason), name="realtime-bridge-swap")

    async def _continue_after(self, error: BaseException) -> bool:
        """The upstream went away: wait for the swap under way, or start one. False: ended."""
        if self._swap_task is None:
            code, _ = upstream_closed_details(error)
            expired = self._upstream_expired or code == 1001
            if not self._may_reconnect():
                await self._on_upstream_closed(error)
                return False
            self._begin_swap("session_expired" if expired else "upstream_drop")
        task = self._swap_task
        assert task is not None  # begun above, or already under way (closed was not set)
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
        self.turns.reset()
        if self._rotation_timer is not None:
            self._rotation_timer.cancel()
        with contextlib.suppress(Exception):
            if self.upstream is not None:
                await self.upstream.close()
        if self.turns.response_active:  # cut off by a drop: close it for the client, unbilled
            response_id = self.turns.active_response_id or "resp_unknown"
            self.turns.on_response_done()
            await self._send_client_quietly(
                frames.dumps(
                    {
                        "type": "response.done",
                        "event_id": "event_vp_" + secrets.token_hex(8),
                        "response": {
                            "id": response_id,
                            "object": "realtime.response",
                            "status": "cancelled",
                            "output": [],
                        },
                    }
                )
            )
        upstream = await self._reconnect()
        if upstream is None:
            return False
        summary, turns = "", []
        try:
            assert self.continuation is not None  # a swap happens only with a continuation
            seed = await self.continuation.seed()
            summary, turns = seed.summary, list(seed.turns)
        except Exception:
            logger.exception("could not build the seed of a new segment; continuing without")
        try:
            created, early = await self._handshake(upstream, summary=summary, seed=turns)
        except Exception:
            logger.exception("the new upstream failed while being seeded")
            with contextlib.suppress(Exception):
                await upstream.close()
            await self.end("upstream_unavailable")
            return False
        self.segment += 1
        self.upstream = upstream
        self.upstream_session_id = str((created.get("session") or {}).get("id") or "")
        while self._swap_buffer:  # audio and events that arrived meanwhile, in order
            frame = self._swap_buffer.pop(0)
            self._swap_buffer_chars -= len(frame)
            await upstream.send(frame)
        self._swapping = False
        gap_ms = (self._clock() - started) * 1000
        self.gaps_ms.append(gap_ms)
        self._segment_started = self._clock()
        self.recorder.record_segment(
            SegmentRecord(self.upstream_session_id, reason, summary, round(gap_ms))
        )
        logger.info("segment %d (%s) ready after %.0f ms", self.segment, reason, gap_ms)
        if self.policy.channel == CHANNEL_WIDGET:
            await self._send_client_quietly(
                frames.dumps(
                    {"type": "vp.session.continued", "reason": reason, "segment": self.segment}
                )
            )
        for message in early:
            await self._relay_upstream(message)
        self._schedule_rotation()
        return True

    async def _reconnect(self) -> Upstream | None:
        """A new upstream, with backoff; 401/403 are final, 429 waits longer."""
        continuation = self.continuation
        assert continuation is not None  # reconnecting happens only with a continuation
        delay = continuation.backoff_s
        code = "upstream_unavailable"
        for attempt in range(continuation.reconnect_attempts + 1):
            if self.closed.is_set():
                return None
            try:
                return await self._connect_upstream()
            except Exception as error:
                code = upstream_failure_code(error)
                logger.warning("reconnect attempt %d failed: %s", attempt + 1, code)
                if code == "upstream_auth_failed" or attempt == continuation.reconnect_attempts:
                    break
                wait = delay
                if code == "upstream_rate_limited":
                    wait = max(delay, continuation.rate_limited_backoff_s)
                await self._client_error(
                    code,
                    f"{ending(code).message} Reconnecting in {wait:.1f} s.",
                    error_type="server_error",
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, continuation.max_backoff_s)
        self._swapping = False
        await self.end(code)
        return None

    def _spend_allows(self) -> bool:
        return self.spend_guard is None or (
            not self._budget_reached and self.spend_guard.allows_response()
        )

    async def _on_upstream_closed(self, error: BaseException) -> None:
        if self.closed.is_set():
            return
        code, reason = upstream_closed_details(error)
        if self.end_reason == "session_expired" or code == 1001:
            await self.end("session_expired")
            return
        logger.info("upstream closed (code=%s reason=%s)", code, reason)
        await self.end(
            "upstream_closed",
            f"The voice service closed the session (code {code})"
            + (f": {reason}" if reason else "")
            + ".",
        )


def _without_audio(event: dict[str, Any]) -> dict[str, Any] | None:
    """The event with the base64 audio of its item content removed (None: nothing to remove).

    OpenAI sends conversation items that carry their audio (over 3 MB); clients have the audio
    already from the deltas, and a socket limit must not cost the session.
    """
    removed = False

    def strip(item: Any) -> Any:
        nonlocal removed
        if not isinstance(item, dict) or not isinstance(item.get("content"), list):
            return item
        parts = []
        for part in item["content"]:
            if isinstance(part, dict) and isinstance(part.get("audio"), str) and part["audio"]:
                part = {**part, "audio": None}
                removed = True
            parts.append(part)
        return {**item, "content": parts}

    result = dict(event)
    if "item" in result:
        result["item"] = strip(result["item"])
    response = result.get("response")
    if isinstance(response, dict) and isinstance(response.get("output"), list):
        result["response"] = {**response, "output": [strip(item) for item in response["output"]]}
    return result if removed else None
