"""The bundled local realtime engine: a development stand-in for the OpenAI Realtime API.

It is NOT an AI. It speaks the GA Realtime protocol (JSON text events, checked against the
``openai`` SDK's models), hears with pocketsphinx, detects turns with webrtcvad, answers with
the deterministic :mod:`.responder` ("You said: ...", tool calls when a tool is named) and
speaks with eSpeak NG. Usage on every ``response.done`` follows :mod:`.protocol`'s documented
token formulas (user audio 1 token per 100 ms, assistant audio 1 token per 50 ms).

Tools: when the user names several configured tools, one response holds one output item per
tool (parallel calls). Function calls end the response (the client sends one
``function_call_output`` per call, then ``response.create``; the answer speaks every output
present). Session tools of ``type: "mcp"`` are imitated without any network call: adding one
with ``session.update`` emits, after ``session.updated``, ``conversation.item.added``
(an ``mcp_list_tools`` item), ``mcp_list_tools.in_progress``, ``mcp_list_tools.completed``
and ``conversation.item.done`` (its ``tools`` = the ``allowed_tools``; the server's other
tools are unknown to the engine); naming an allowed MCP tool gives an ``mcp_call`` output item
(``response.output_item.added``, ``response.mcp_call_arguments.delta``/``.done``,
``response.mcp_call.in_progress``, ``response.mcp_call.completed``,
``response.output_item.done``) whose ``output`` is a placeholder
("[local engine: MCP server <label> not contacted] <tool> called ..."), followed in the *same*
response by a message item speaking "The <tool words> tool on <label> returned: <output>."
(when function calls were made in the same turn, that sentence waits for the answer to their
outputs instead). ``require_approval`` is accepted and treated as "never" (no
``mcp_approval_request`` items); ``authorization`` is never echoed back.

Sessions by ``intent``: ``None`` (realtime, or translation for a ``gpt-realtime-translate``
model), ``"transcription"``, ``"translation"``. Translation sessions speak the SDK's
translation protocol (client: ``session.update``, ``session.input_audio_buffer.append``,
``session.close``; server: ``session.created``, ``session.updated``,
``session.input_transcript.delta`` (only when ``audio.input.transcription`` is configured),
``session.output_transcript.delta``, ``session.output_audio.delta``, ``session.closed``,
``error``): input is 24 kHz PCM16, utterances are found by the VAD and recognised by
pocketsphinx, and the output is a *placeholder translation: the local engine does not
translate* -- the English source marked with the target language (``[fr] what is ...``) and
spoken by eSpeak's voice for that language if it has one (else en-us). ``session.close``
flushes the utterance in progress, then ``session.closed`` and close 1000. No token usage is
reported (the SDK's translation events carry none; translation is billed per minute).

Two transports share one :class:`LocalEngineSession`:

* in process: ``conn = await connect_local(model)`` returns a :class:`LocalConnection` with the
  small interface of a ``websockets`` client connection (``send``, ``recv``, ``close``,
  ``close_code``, ``close_reason``; ``recv`` raises ``websockets.exceptions.ConnectionClosed``
  once the session has ended and its last events were read);
* a standalone websockets server at ``ws://HOST:PORT/v1/realtime?model=...``
  (:func:`agents.realtime.server.serve`, or ``python -m agents.realtime.engine --port 8765``)
  that the official SDK can use through ``AsyncOpenAI(websocket_base_url="ws://HOST:PORT/v1")``.

Error codes (``error.type`` is always ``invalid_request_error``; ``error.event_id`` is the
offending client event's ``event_id`` when it had one): ``invalid_json``, ``invalid_value``
(unknown event type with ``param="type"``, bad base64 with ``param="audio"``, schema errors),
``missing_required_parameter``, ``unknown_parameter`` (translation ``session.update``),
``input_audio_buffer_commit_empty``,
``conversation_already_has_active_response``, ``response_cancel_not_active``,
``item_not_found``, ``cannot_update_voice``, ``server_error``, ``session_expired`` (then
close 1001).

Timing: the worker awaits speech recognition (about 0.25 s per second of audio, one decoder
per process behind a lock) before reading further client events, so events that follow a
committed turn wait for its transcript; appends and VAD cost about 0.07 ms per 20 ms frame.
Audio deltas are sent as fast as they are synthesized (~100 ms each) unless
``realtime_pacing`` is set.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

from . import audio, speech
from .protocol import (
    IMAGE_TOKENS,
    MIN_COMMIT_MS,
    ProtocolError,
    Tokens,
    assistant_audio_tokens,
    deep_merge,
    default_realtime_session,
    default_transcription_session,
    default_translation_session,
    default_turn_detection,
    error_event,
    is_translation_model,
    new_id,
    text_tokens,
    usage_payload,
    user_audio_tokens,
)
from .responder import ToolCall, decide, mcp_tool_names, tool_results_text, tool_words

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-realtime-2"
OUTPUT_CHUNK_MS = 100
CLIENT_EVENT_TYPES = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "output_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
)
TRANSLATION_CLIENT_EVENT_TYPES = (
    "session.update",
    "session.input_audio_buffer.append",
    "session.close",
)
TRANSLATION_FRAME_MS = 200  # elapsed_ms advances in 200 ms translation frames
TRANSLATION_RATE = 24000
# eSpeak has these languages under another name.
_ESPEAK_LANGUAGE_ALIASES = {"zh": "cmn", "no": "nb"}
_translation_voices: dict[str, str] = {}


def mcp_placeholder_output(server_label: str, name: str, arguments: dict[str, Any]) -> str:
    """The output of an imitated MCP call: the engine never contacts MCP servers."""
    said = ", ".join(f"{tool_words(str(k))} {v}" for k, v in arguments.items())
    called = f"{name} called with {said}" if said else f"{name} called"
    return f"[local engine: MCP server {server_label} not contacted] {called}"


def translation_placeholder(language: str, text: str) -> str:
    """Placeholder translation: the local engine does not translate; it marks the source
    text with the target language, e.g. ``[fr] what is the status of my order``."""
    return f"[{language}] {text}"


def _voice_candidates(language: str) -> list[str]:
    code = language.strip().lower().replace("_", "-")
    primary = code.split("-")[0]
    if primary == "en" or not primary:
        return [speech.DEFAULT_VOICE]
    names = [code, primary, _ESPEAK_LANGUAGE_ALIASES.get(primary, primary)]
    # "<voice>+<variant>": speech.espeak_voice passes such names through to eSpeak.
    return list(dict.fromkeys(f"{n}+m1" for n in names)) + [speech.DEFAULT_VOICE]


def synthesize_in_language(text: str, language: str, rate_hz: int = TRANSLATION_RATE) -> bytes:
    """Speak ``text`` with eSpeak's voice for ``language`` if it has one, else en-us
    (blocking; the voice found is cached per language)."""
    cached = _translation_voices.get(language)
    for voice in [cached] if cached else _voice_candidates(language):
        try:
            pcm = speech.synthesize(text, rate_hz=rate_hz, voice=voice)
        except ValueError:
            continue
        _translation_voices[language] = voice
        return pcm
    return speech.synthesize(text, rate_hz=rate_hz)


def _closed_exc(code: int, reason: str) -> ConnectionClosed:
    frame = Close(code, reason)
    cls = ConnectionClosedOK if code in (1000, 1001) else ConnectionClosedError
    return cls(frame, frame, False)


def _validate(model: Any, event: dict[str, Any]) -> None:
    """Check a client event against the SDK's model; raise ``invalid_value`` on mismatch."""
    try:
        model.model_validate(event)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err.get("loc", ()))
        raise ProtocolError(
            "invalid_value", f"Invalid '{param}': {err.get('msg')}", param=param
        ) from None


@dataclass
class RateLimits:
    """OpenAI's per-minute limits, imitated (the engine enforces none): every response counts
    one request and its total tokens against a fixed budget over a sliding minute."""

    requests_per_minute: int = 5_000
    tokens_per_minute: int = 400_000
    clock: Any = time.monotonic
    _used: list[tuple[float, int]] = field(default_factory=list)

    def updated_event(self, tokens: int) -> dict[str, Any]:
        """Count one finished response; the ``rate_limits.updated`` event that follows it."""
        now = self.clock()
        self._used = [(at, n) for at, n in self._used if now - at < 60.0]
        self._used.append((now, tokens))
        reset = round(60.0 - (now - self._used[0][0]), 3)
        used_tokens = sum(n for _, n in self._used)
        return {
            "type": "rate_limits.updated",
            "rate_limits": [
                {
                    "name": "requests",
                    "limit": self.requests_per_minute,
                    "remaining": max(0, self.requests_per_minute - len(self._used)),
                    "reset_seconds": reset,
                },
                {
                    "name": "tokens",
                    "limit": self.tokens_per_minute,
                    "remaining": max(0, self.tokens_per_minute - used_tokens),
                    "reset_seconds": reset,
                },
            ],
        }


@dataclass
class _Response:
    id: str
    instructions: str
    modalities: list[str]
    tools: list[dict[str, Any]]
    tool_choice: Any
    max_output_tokens: int | None
    out_format: dict[str, Any]
    voice: str
    speed: float
    in_conversation: bool
    input_items: list[dict[str, Any]]
    metadata: dict[str, str] | None
    input_tokens: Tokens = Tokens()
    cached_tokens: Tokens = Tokens()
    output_items: list[dict[str, Any]] = field(default_factory=list)
    output_tokens: Tokens = Tokens()
    cancel_reason: str | None = None
    task: asyncio.Task | None = None

    def payload(
        self, status: str, usage: dict[str, Any] | None = None, details: Any = None
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": self.output_items,
            "conversation_id": "conv_local" if self.in_conversation else None,
            "output_modalities": self.modalities,
            "max_output_tokens": self.max_output_tokens if self.max_output_tokens else "inf",
            "audio": {"output": {"format": self.out_format, "voice": self.voice}},
            "metadata": self.metadata,
            "usage": usage,
        }


class LocalEngineSession:
    """One realtime session. Transport-agnostic: feed client events (JSON text) with
    :meth:`receive`, read server events (JSON text) with :meth:`next_event`.

    Client events are processed in order by one worker task; speech recognition and synthesis
    run in worker threads, responses stream from their own task (so ``response.cancel`` and
    barge-in are handled while a response plays).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        max_session_seconds: float = 3600.0,
        intent: str | None = None,
        realtime_pacing: bool = False,
        output_chunk_ms: int = OUTPUT_CHUNK_MS,
    ) -> None:
        self.model = model
        self.max_session_seconds = max_session_seconds
        self.realtime_pacing = realtime_pacing
        self.output_chunk_ms = output_chunk_ms
        self.session_id = new_id("sess")
        expires_at = int(time.time() + max_session_seconds)
        if intent == "transcription":
            self.config = default_transcription_session(self.session_id, expires_at)
        elif intent == "translation" or (intent is None and is_translation_model(model)):
            self.config = default_translation_session(self.session_id, model, expires_at)
        else:
            self.config = default_realtime_session(self.session_id, model, expires_at)
        self.items: list[dict[str, Any]] = []
        self._tokens: dict[str, Tokens] = {}
        self._audio_ms: dict[str, float] = {}
        self._heard: dict[str, str] = {}
        self._buffer = bytearray()  # PCM16 at the input format's native rate
        self._buffer_origin_ms = 0.0  # session audio time at the buffer's first sample
        self._appended_ms = 0.0  # all audio ever appended, in ms
        self._vad: speech.VoiceActivityDetector | None = None
        self._vad_item_id: str | None = None
        self._vad_start_ms = 0
        self._response: _Response | None = None
        self._prev_segments: list[tuple[str, Tokens]] = []
        self._assistant_audio_sent = False
        self._mcp_listed: dict[str, str] = {}  # server_label -> listed tool config
        self._rate_limits = RateLimits()
        self._transcribing: dict[str, asyncio.Task] = {}  # user item id -> its recognition
        self._last_transcription: asyncio.Task | None = None
        self._translation_tail: asyncio.Task | None = None
        self._translated_in = False  # a source transcript delta was sent
        self._translated_out = False  # a translated transcript delta was sent
        self._in: asyncio.Queue[str | None] = asyncio.Queue()
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._rebuild_vad()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Emit ``session.created`` and start processing; call once, inside a running loop."""
        self._emit({"type": "session.created", "session": self.config})
        self._worker = asyncio.create_task(self._run(), name=f"local-engine-{self.session_id}")
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.max_session_seconds, self._expire)

    @property
    def closed(self) -> bool:
        return self._closed

    async def receive(self, message: str | bytes) -> None:
        """Queue one client event (never blocks on engine work)."""
        if self._closed:
            raise _closed_exc(self.close_code or 1006, self.close_reason)
        if isinstance(message, bytes | bytearray | memoryview):
            message = bytes(message).decode("utf-8", "replace")
        self._in.put_nowait(message)

    async def next_event(self) -> str:
        """Next server event; raises ``ConnectionClosed`` once closed and drained."""
        if self._closed and self._out.empty():
            raise _closed_exc(self.close_code or 1006, self.close_reason)
        message = await self._out.get()
        if message is None:
            self._out.put_nowait(None)  # keep later callers failing too
            raise _closed_exc(self.close_code or 1006, self.close_reason)
        return message

    async def close(self, code: int = 1000, reason: str = "", *, drain: bool = True) -> None:
        """End the session. With ``drain`` already queued events can still be read."""
        if self._closed:
            return
        self._closed = True
        self.close_code = code
        self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
        if not drain:
            while not self._out.empty():
                self._out.get_nowait()
        self._out.put_nowait(None)
        self._in.put_nowait(None)
        current = asyncio.current_task()
        tasks = [self._worker]
        if self._response is not None:
            tasks.append(self._response.task)
        tasks.append(self._translation_tail)
        tasks.extend(self._transcribing.values())
        for task in tasks:
            if task is not None and task is not current and not task.done():
                task.cancel()

    def _expire(self) -> None:
        minutes = self.max_session_seconds / 60
        span = f"{minutes:g} minutes" if minutes >= 1 else f"{self.max_session_seconds:g} seconds"
        self._emit(
            error_event("session_expired", f"Your session hit the maximum duration of {span}.")
        )
        asyncio.ensure_future(self.close(1001, "session expired"))

    # --- plumbing -----------------------------------------------------------------------

    def _emit(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        event = {"event_id": new_id("event"), **event}
        self._out.put_nowait(json.dumps(event, separators=(",", ":")))

    async def _run(self) -> None:
        while True:
            message = await self._in.get()
            if message is None or self._closed:
                return
            client_event_id = None
            try:
                try:
                    event = json.loads(message)
                except ValueError as exc:
                    raise ProtocolError(
                        "invalid_json",
                        f"The server could not parse the JSON of your event: {exc}.",
                    ) from None
                if not isinstance(event, dict):
                    raise ProtocolError("invalid_json", "Client events must be JSON objects.")
                client_event_id = (
                    event.get("event_id") if isinstance(event.get("event_id"), str) else None
                )
                await self._dispatch(event)
            except ProtocolError as exc:
                self._emit(
                    error_event(
                        exc.code,
                        exc.message,
                        event_id=client_event_id,
                        param=exc.param,
                        type_=exc.type,
                    )
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the session alive, like the real API
                log.exception("local engine: error handling a client event")
                self._emit(
                    error_event(
                        "server_error",
                        f"Internal error: {exc}",
                        event_id=client_event_id,
                        type_="server_error",
                    )
                )

    async def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if not isinstance(kind, str):
            raise ProtocolError(
                "missing_required_parameter", "Missing required parameter: 'type'.", param="type"
            )
        if self.is_translation:
            await self._dispatch_translation(kind, event)
            return
        handler = {
            "session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "output_audio_buffer.clear": self._on_output_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.truncate": self._on_item_truncate,
            "conversation.item.delete": self._on_item_delete,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
        }.get(kind)
        if handler is None:
            supported = ", ".join(f"'{t}'" for t in CLIENT_EVENT_TYPES)
            raise ProtocolError(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: {supported}.",
                param="type",
            )
        await handler(event)

    # --- session ------------------------------------------------------------------------

    @property
    def is_transcription(self) -> bool:
        return self.config.get("type") == "transcription"

    @property
    def is_translation(self) -> bool:
        return self.config.get("type") == "translation"

    @property
    def input_format(self) -> str:
        if self.is_translation:
            return "audio/pcm"  # translation input is always 24 kHz PCM16 mono
        return self.config["audio"]["input"]["format"]["type"]

    @property
    def _input_rate(self) -> int:
        return audio.format_rate(self.input_format)

    def _rebuild_vad(self) -> None:
        if self.is_translation:
            td: dict[str, Any] | None = default_turn_detection()
        else:
            td = self.config["audio"]["input"].get("turn_detection")
        self._vad_item_id = None
        if not td:
            self._vad = None
            return
        if td.get("type") == "semantic_vad":
            # eagerness -> how long a pause ends the turn
            silence = {"low": 1200, "medium": 800, "high": 400}.get(
                td.get("eagerness") or "auto", 800
            )
            self._vad = speech.VoiceActivityDetector(
                input_rate=self._input_rate, silence_duration_ms=silence, prefix_padding_ms=300
            )
        else:
            threshold = td.get("threshold")
            silence = td.get("silence_duration_ms")
            prefix = td.get("prefix_padding_ms")
            self._vad = speech.VoiceActivityDetector(
                input_rate=self._input_rate,
                threshold=0.5 if threshold is None else threshold,
                silence_duration_ms=500 if silence is None else silence,
                prefix_padding_ms=300 if prefix is None else prefix,
            )
        # The detector's clock starts now: offset its times by the audio already appended.
        self._vad_offset_ms = self._appended_ms

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        from openai.types.realtime import SessionUpdateEvent

        session = event.get("session")
        if not isinstance(session, dict):
            raise ProtocolError(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                param="session",
            )
        if "type" not in session:
            raise ProtocolError(
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                param="session.type",
            )
        _validate(SessionUpdateEvent, event)
        update = {
            k: v for k, v in session.items() if k not in ("model", "id", "object", "expires_at")
        }
        if isinstance(update.get("tools"), list):
            # MCP credentials are used, never echoed (and the engine contacts no server).
            update["tools"] = [
                {k: v for k, v in tool.items() if k != "authorization"}
                if isinstance(tool, dict) and tool.get("type") == "mcp"
                else tool
                for tool in update["tools"]
            ]
        for path in (("audio", "input", "format"), ("audio", "output", "format")):
            fmt = update
            for key in path:
                fmt = fmt.get(key) if isinstance(fmt, dict) else None
            if isinstance(fmt, dict):
                fmt.setdefault("type", "audio/pcm")
                if fmt["type"] == "audio/pcm":
                    fmt.setdefault("rate", 24000)
        old_input = self.config["audio"]["input"]
        if update["type"] != self.config["type"]:
            base = (
                default_transcription_session(self.session_id, self.config["expires_at"])
                if update["type"] == "transcription"
                else default_realtime_session(
                    self.session_id, self.model, self.config["expires_at"]
                )
            )
        else:
            base = self.config
        new = deep_merge(base, update)
        voice = (new.get("audio", {}).get("output") or {}).get("voice")
        old_voice = (self.config.get("audio", {}).get("output") or {}).get("voice")
        if self._assistant_audio_sent and voice != old_voice:
            raise ProtocolError(
                "cannot_update_voice",
                "Cannot update a conversation's voice if assistant audio is present.",
                param="session.audio.output.voice",
            )
        self.config = new
        new_input = new["audio"]["input"]
        if new_input.get("format") != old_input.get("format"):
            self._buffer.clear()
            self._buffer_origin_ms = self._appended_ms
        if new_input.get("format") != old_input.get("format") or new_input.get(
            "turn_detection"
        ) != old_input.get("turn_detection"):
            self._rebuild_vad()
        self._emit({"type": "session.updated", "session": self.config})
        if not self.is_transcription:
            self._list_mcp_tools()

    def _list_mcp_tools(self) -> None:
        """Imitate importing the tools of MCP servers the session just gained: an
        ``mcp_list_tools`` item listing the server's ``allowed_tools`` (the engine makes no
        network calls, so a server without ``allowed_tools`` lists none)."""
        listed: dict[str, str] = {}
        for tool in self.config.get("tools") or []:
            if not isinstance(tool, dict) or tool.get("type") != "mcp":
                continue
            label = tool.get("server_label") or ""
            signature = json.dumps(
                [tool.get(k) for k in ("server_url", "connector_id", "allowed_tools")],
                sort_keys=True,
            )
            listed[label] = signature
            if self._mcp_listed.get(label) == signature:
                continue
            item: dict[str, Any] = {
                "id": new_id("item"),
                "type": "mcp_list_tools",
                "server_label": label,
                "tools": [],
            }
            previous = self.items[-1]["id"] if self.items else None
            self._add_item(item, previous, Tokens())
            self._emit({"type": "mcp_list_tools.in_progress", "item_id": item["id"]})
            item["tools"] = [
                {"name": name, "input_schema": {"type": "object"}} for name in mcp_tool_names(tool)
            ]
            self._emit({"type": "mcp_list_tools.completed", "item_id": item["id"]})
            self._emit(
                {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )
        self._mcp_listed = listed

    # --- input audio --------------------------------------------------------------------

    def _decode_audio(self, data: Any, param: str = "audio") -> bytes:
        if not isinstance(data, str):
            raise ProtocolError(
                "missing_required_parameter", f"Missing required parameter: '{param}'.", param=param
            )
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(
                "invalid_value",
                f"Invalid '{param}': expected base64-encoded audio bytes.",
                param=param,
            ) from None
        return audio.decode_to_pcm16(raw, self.input_format)

    def _buffer_ms(self) -> float:
        return len(self._buffer) / 2 * 1000 / self._input_rate

    def _slice_buffer(self, start_ms: float, end_ms: float) -> bytes:
        """Take session-time [start, end) out of the buffer; keep what follows ``end``."""
        rate = self._input_rate
        start = max(0, int(round((start_ms - self._buffer_origin_ms) * rate / 1000))) * 2
        end = max(0, int(round((end_ms - self._buffer_origin_ms) * rate / 1000))) * 2
        end = min(end, len(self._buffer))
        chunk = bytes(self._buffer[start:end])
        del self._buffer[:end]
        self._buffer_origin_ms += end / 2 * 1000 / rate
        return chunk

    async def _on_append(self, event: dict[str, Any]) -> None:
        pcm = self._decode_audio(event.get("audio"))
        self._buffer += pcm
        self._appended_ms += len(pcm) / 2 * 1000 / self._input_rate
        if self._vad is None:
            return
        for vad_event in self._vad.feed(pcm):
            at_ms = vad_event.ms + self._vad_offset_ms
            if vad_event.kind == "speech_started":
                self._vad_item_id = new_id("item")
                self._vad_start_ms = int(at_ms)
                self._emit(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": int(at_ms),
                        "item_id": self._vad_item_id,
                    }
                )
                td = self.config["audio"]["input"].get("turn_detection") or {}
                if self._response is not None and td.get("interrupt_response", True):
                    self._response.cancel_reason = "turn_detected"
            else:
                item_id = self._vad_item_id or new_id("item")
                self._vad_item_id = None
                self._emit(
                    {
                        "type": "input_audio_buffer.speech_stopped",
                        "audio_end_ms": int(at_ms),
                        "item_id": item_id,
                    }
                )
                pcm_turn = self._slice_buffer(self._vad_start_ms, at_ms)
                await self._commit(item_id, pcm_turn)
                td = self.config["audio"]["input"].get("turn_detection") or {}
                if not self.is_transcription and td.get("create_response", True):
                    await self._wait_for_cancelled_response()
                    if self._response is None:
                        self._start_response({})
        if not self._vad.in_speech:
            # Idle: keep only recent audio (prefix padding) so silence does not pile up.
            excess = self._buffer_ms() - 2000
            if excess > 0:
                self._slice_buffer(self._buffer_origin_ms, self._buffer_origin_ms + excess)

    async def _wait_for_cancelled_response(self, timeout: float = 5.0) -> None:
        """Let a response that barge-in cancelled finish (its response.done) first."""
        resp = self._response
        if resp is not None and resp.cancel_reason and resp.task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(resp.task), timeout)

    async def _on_commit(self, event: dict[str, Any]) -> None:
        ms = self._buffer_ms()
        if ms < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        item_id = self._vad_item_id or new_id("item")
        if self._vad is not None:
            self._vad.reset()
            self._vad_item_id = None
        pcm = bytes(self._buffer)
        self._buffer.clear()
        self._buffer_origin_ms = self._appended_ms
        await self._commit(item_id, pcm)

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self._buffer.clear()
        self._buffer_origin_ms = self._appended_ms
        if self._vad is not None:
            self._vad.reset()
            self._vad_item_id = None
        self._emit({"type": "input_audio_buffer.cleared"})

    async def _on_output_clear(self, event: dict[str, Any]) -> None:
        raise ProtocolError(
            "invalid_value",
            "output_audio_buffer.clear is only supported over WebRTC and SIP.",
            param="type",
        )

    def _transcription_config(self) -> dict[str, Any] | None:
        return self.config["audio"]["input"].get("transcription")

    async def _commit(self, item_id: str, pcm: bytes) -> None:
        """Turn committed input audio into a user item, transcribe it, emit the events."""
        ms = len(pcm) / 2 * 1000 / self._input_rate
        previous = self.items[-1]["id"] if self.items else None
        self._emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": previous,
            }
        )
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._add_item(item, previous, Tokens(audio=user_audio_tokens(ms)), audio_ms=ms)
        self._emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})
        # Recognition runs beside the turn (as at OpenAI, the transcript may arrive after
        # response.created); one after the other, so transcripts keep the turns' order.
        self._transcribing[item_id] = asyncio.create_task(
            self._transcribe_turn(
                item, pcm, ms, self._transcription_config(), self._last_transcription
            ),
            name=f"transcribe-{item_id}",
        )
        self._last_transcription = self._transcribing[item_id]

    async def _transcribe_turn(
        self,
        item: dict[str, Any],
        pcm: bytes,
        ms: float,
        transcription: dict[str, Any] | None,
        previous: asyncio.Task | None,
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        item_id = item["id"]
        try:
            transcript = await asyncio.to_thread(speech.transcribe, pcm, self._input_rate)
        finally:
            self._transcribing.pop(item_id, None)
        self._heard[item_id] = transcript
        if transcription:
            item["content"][0]["transcript"] = transcript
            for i, word in enumerate(transcript.split()):
                self._emit(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item_id,
                        "content_index": 0,
                        "delta": word if i == 0 else " " + word,
                    }
                )
            if (transcription.get("model") or "") in ("whisper-1", "gpt-realtime-whisper"):
                usage: dict[str, Any] = {"type": "duration", "seconds": round(ms / 1000, 3)}
            else:
                audio_in = user_audio_tokens(ms)
                out = text_tokens(transcript)
                usage = {
                    "type": "tokens",
                    "input_tokens": audio_in,
                    "output_tokens": out,
                    "total_tokens": audio_in + out,
                    "input_token_details": {"audio_tokens": audio_in, "text_tokens": 0},
                }
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": transcript,
                    "usage": usage,
                }
            )

    # --- conversation items -------------------------------------------------------------

    def _find(self, item_id: Any) -> dict[str, Any] | None:
        return next((i for i in self.items if i.get("id") == item_id), None)

    def _add_item(
        self,
        item: dict[str, Any],
        previous_item_id: str | None,
        tokens: Tokens,
        *,
        audio_ms: float = 0.0,
        emit: bool = True,
    ) -> str | None:
        """Insert ``item`` after ``previous_item_id`` ("root": first; None: last); returns
        the id of the item now before it (None when it is first), as the events carry it."""
        if previous_item_id is None or previous_item_id == "root":
            index = 0 if previous_item_id == "root" else len(self.items)
        else:
            prev = self._find(previous_item_id)
            index = self.items.index(prev) + 1 if prev is not None else len(self.items)
        self.items.insert(index, item)
        previous = self.items[index - 1]["id"] if index > 0 else None
        self._tokens[item["id"]] = tokens
        if audio_ms:
            self._audio_ms[item["id"]] = audio_ms
        if emit:
            self._emit(
                {"type": "conversation.item.added", "previous_item_id": previous, "item": item}
            )
        return previous

    def _item_tokens(self, item: dict[str, Any]) -> tuple[Tokens, float]:
        """Token counts of a client-created item, and its audio duration (ms)."""
        kind = item.get("type")
        if kind == "function_call":
            return Tokens(
                text=text_tokens((item.get("name") or "") + (item.get("arguments") or ""))
            ), 0.0
        if kind == "function_call_output":
            return Tokens(text=text_tokens(item.get("output"))), 0.0
        if kind == "mcp_call":
            text = (item.get("name") or "") + (item.get("arguments") or "")
            return Tokens(text=text_tokens(text + (item.get("output") or ""))), 0.0
        if kind != "message":
            return Tokens(), 0.0
        total = Tokens()
        audio_ms = 0.0
        for part in item.get("content") or []:
            ptype = part.get("type")
            if ptype in ("input_text", "output_text", "text"):
                total += Tokens(text=text_tokens(part.get("text")))
            elif ptype == "input_image":
                total += Tokens(image=IMAGE_TOKENS)
            elif ptype == "input_audio":
                ms = part.pop("_ms", 0.0)
                audio_ms += ms
                total += Tokens(audio=user_audio_tokens(ms))
            elif ptype == "output_audio":
                ms = part.pop("_ms", 0.0)
                audio_ms += ms
                total += Tokens(
                    audio=assistant_audio_tokens(ms), text=text_tokens(part.get("transcript"))
                )
        return total, audio_ms

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        from openai.types.realtime import ConversationItemCreateEvent

        if not isinstance(event.get("item"), dict):
            raise ProtocolError(
                "missing_required_parameter", "Missing required parameter: 'item'.", param="item"
            )
        _validate(ConversationItemCreateEvent, event)
        item = json.loads(json.dumps(event["item"]))
        item_id = item.get("id") or new_id("item")
        if self._find(item_id) is not None:
            raise ProtocolError(
                "invalid_value", f"Item with id '{item_id}' already exists.", param="item.id"
            )
        previous = event.get("previous_item_id")
        if previous not in (None, "root") and self._find(previous) is None:
            raise ProtocolError(
                "item_not_found",
                f"Previous item with id '{previous}' not found.",
                param="previous_item_id",
            )
        item["id"] = item_id
        item.setdefault("object", "realtime.item")
        if item.get("type") in ("message", "function_call", "function_call_output"):
            item["status"] = "completed"
        heard: list[str] = []
        for part in item.get("content") or []:
            if part.get("type") == "input_audio" and part.get("audio"):
                pcm = self._decode_audio(part.pop("audio"), "item.content.audio")
                part["_ms"] = len(pcm) / 2 * 1000 / self._input_rate
                part.setdefault("transcript", None)
                heard.append(
                    part.get("transcript")
                    or await asyncio.to_thread(speech.transcribe, pcm, self._input_rate)
                )
        tokens, audio_ms = self._item_tokens(item)
        if heard:
            self._heard[item_id] = " ".join(heard)
        if previous is None and self.items:
            previous = self.items[-1]["id"]
        previous = self._add_item(item, previous, tokens, audio_ms=audio_ms)
        self._emit({"type": "conversation.item.done", "previous_item_id": previous, "item": item})

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self._find(event.get("item_id"))
        if item is None:
            raise ProtocolError(
                "item_not_found",
                f"Item with item_id '{event.get('item_id')}' not found.",
                param="item_id",
            )
        self._emit({"type": "conversation.item.retrieved", "item": item})

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        item = self._find(event.get("item_id"))
        if item is None:
            raise ProtocolError(
                "item_not_found",
                f"Item with item_id '{event.get('item_id')}' not found.",
                param="item_id",
            )
        self.items.remove(item)
        self._emit({"type": "conversation.item.deleted", "item_id": item["id"]})

    async def _on_item_truncate(self, event: dict[str, Any]) -> None:
        from openai.types.realtime import ConversationItemTruncateEvent

        _validate(ConversationItemTruncateEvent, event)
        item = self._find(event["item_id"])
        if item is None:
            raise ProtocolError(
                "item_not_found",
                f"Item with item_id '{event['item_id']}' not found.",
                param="item_id",
            )
        index = event["content_index"]
        content = item.get("content") or []
        if (
            item.get("role") != "assistant"
            or index >= len(content)
            or content[index].get("type") != "output_audio"
        ):
            raise ProtocolError(
                "invalid_value",
                "Only assistant messages with audio content can be truncated.",
                param="content_index",
            )
        end_ms = event["audio_end_ms"]
        total_ms = self._audio_ms.get(item["id"], 0.0)
        if end_ms > total_ms + 0.5:
            raise ProtocolError(
                "invalid_value",
                f"audio_end_ms ({end_ms}) is longer than the audio ({total_ms:.0f}ms).",
                param="audio_end_ms",
            )
        content[index]["transcript"] = ""  # the server drops the transcript, like OpenAI
        self._audio_ms[item["id"]] = float(end_ms)
        self._tokens[item["id"]] = Tokens(audio=assistant_audio_tokens(end_ms))
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": index,
                "audio_end_ms": end_ms,
            }
        )

    # --- responses ----------------------------------------------------------------------

    async def _on_response_create(self, event: dict[str, Any]) -> None:
        from openai.types.realtime import ResponseCreateEvent

        if self.is_transcription:
            raise ProtocolError(
                "invalid_value", "Transcription sessions do not create responses.", param="type"
            )
        if self._response is not None:
            raise ProtocolError(
                "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
            )
        _validate(ResponseCreateEvent, event)
        self._start_response(event.get("response") or {})

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if self._response is None or (wanted and wanted != self._response.id):
            raise ProtocolError(
                "response_cancel_not_active", "Cancellation failed: no active response found."
            )
        self._response.cancel_reason = "client_cancelled"

    def _start_response(self, overrides: dict[str, Any]) -> None:
        cfg = self.config
        out_cfg = cfg["audio"]["output"]
        audio_override = (overrides.get("audio") or {}).get("output") or {}
        out_format = dict(audio_override.get("format") or out_cfg["format"])
        if out_format.get("type", "audio/pcm") == "audio/pcm":
            out_format = {"type": "audio/pcm", "rate": 24000}
        max_tokens = overrides.get("max_output_tokens", cfg.get("max_output_tokens"))
        in_conversation = overrides.get("conversation", "auto") != "none"
        if "input" in overrides and overrides["input"] is not None:
            input_items = []
            for entry in overrides["input"]:
                if entry.get("type") == "item_reference":
                    found = self._find(entry.get("id"))
                    if found is not None:
                        input_items.append(found)
                else:
                    input_items.append(entry)
        elif in_conversation:
            input_items = list(self.items)
        else:
            input_items = []
        voice = audio_override.get("voice") or out_cfg.get("voice") or "alloy"
        if isinstance(voice, dict):
            voice = voice.get("id", "alloy")
        resp = _Response(
            id=new_id("resp"),
            instructions=overrides.get("instructions", cfg.get("instructions")) or "",
            modalities=list(
                overrides.get("output_modalities") or cfg.get("output_modalities") or ["audio"]
            ),
            tools=list(overrides.get("tools", cfg.get("tools")) or []),
            tool_choice=overrides.get("tool_choice", cfg.get("tool_choice")) or "auto",
            max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
            out_format=out_format,
            voice=voice,
            speed=float(out_cfg.get("speed") or 1.0),
            in_conversation=in_conversation,
            input_items=input_items,
            metadata=overrides.get("metadata"),
        )
        # Input and cached tokens (see protocol.py for the formulas).
        segments = [
            ("instructions:" + resp.instructions, Tokens(text=text_tokens(resp.instructions)))
        ]
        for item in input_items:
            tokens = self._tokens.get(item.get("id", ""))
            if tokens is None:
                tokens, _ = self._item_tokens(dict(item))
            segments.append((str(item.get("id")), tokens))
        total = Tokens()
        for _, tokens in segments:
            total += tokens
        cached = Tokens()
        for (key, tokens), (prev_key, prev_tokens) in zip(
            segments, self._prev_segments, strict=False
        ):
            if key != prev_key or tokens != prev_tokens:
                break
            cached += tokens
        self._prev_segments = segments
        resp.input_tokens = total
        resp.cached_tokens = cached
        self._response = resp
        # response.created goes out now, before any input transcript (as at OpenAI).
        self._emit({"type": "response.created", "response": resp.payload("in_progress")})
        resp.task = asyncio.create_task(self._run_response(resp), name=f"response-{resp.id}")

    def _responder_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items as the responder sees them: user audio carries what pocketsphinx heard."""
        out = []
        for item in items:
            heard = self._heard.get(item.get("id", ""))
            if heard is not None:
                item = json.loads(json.dumps(item))
                for part in item.get("content") or []:
                    if part.get("type") == "input_audio" and not part.get("transcript"):
                        part["transcript"] = heard
            out.append(item)
        return out

    async def _run_response(self, resp: _Response) -> None:
        status, details = "completed", None
        try:
            # The answer needs what was heard: wait for the input items' recognition.
            for item in resp.input_items:
                pending = self._transcribing.get(item.get("id", ""))
                if pending is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(pending)
            reply = decide(
                self._responder_items(resp.input_items),
                instructions=resp.instructions,
                tools=resp.tools,
                tool_choice=resp.tool_choice,
            )
            if reply.calls:
                status = await self._emit_tool_calls(resp, reply.calls)
            elif "audio" in resp.modalities:
                status = await self._emit_audio_message(resp, reply.text)
            else:
                status = await self._emit_text_message(resp, reply.text)
            if status == "cancelled":
                details = {"type": "cancelled", "reason": resp.cancel_reason}
            elif status == "incomplete":
                details = {"type": "incomplete", "reason": "max_output_tokens"}
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("local engine: response failed")
            status = "failed"
            details = {
                "type": "failed",
                "error": {"type": "server_error", "code": "server_error", "message": str(exc)},
            }
        finally:
            usage = usage_payload(resp.input_tokens, resp.cached_tokens, resp.output_tokens)
            self._emit({"type": "response.done", "response": resp.payload(status, usage, details)})
            self._emit(self._rate_limits.updated_event(usage["total_tokens"]))
            if self._response is resp:
                self._response = None

    def _output_item_start(self, resp: _Response, item: dict[str, Any]) -> int:
        index = len(resp.output_items)
        resp.output_items.append(item)
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": resp.id,
                "output_index": index,
                "item": item,
            }
        )
        if resp.in_conversation:
            previous = self.items[-1]["id"] if self.items else None
            self._add_item(item, previous, Tokens())
        return index

    def _output_item_finish(
        self, resp: _Response, item: dict[str, Any], index: int, tokens: Tokens, ms: float = 0.0
    ) -> None:
        resp.output_tokens += tokens
        if resp.in_conversation:
            self._tokens[item["id"]] = tokens
            if ms:
                self._audio_ms[item["id"]] = ms
            previous = None
            pos = self.items.index(item) if item in self.items else -1
            if pos > 0:
                previous = self.items[pos - 1]["id"]
            self._emit(
                {"type": "conversation.item.done", "previous_item_id": previous, "item": item}
            )
        self._emit(
            {
                "type": "response.output_item.done",
                "response_id": resp.id,
                "output_index": index,
                "item": item,
            }
        )

    async def _emit_tool_calls(self, resp: _Response, calls: list[ToolCall]) -> str:
        """One output item per call (parallel calls). With only MCP calls (run "remotely"
        by the engine) the same response then speaks their results in a message item;
        with function calls the client answers them and a later response speaks all."""
        mcp_items: list[dict[str, Any]] = []
        for call in calls:
            if resp.cancel_reason:
                return "cancelled"
            if call.kind == "mcp":
                mcp_items.append(await self._emit_mcp_call(resp, call))
            else:
                await self._emit_function_call(resp, call)
            await asyncio.sleep(0)
        if any(call.kind == "function" for call in calls) or not mcp_items:
            return "completed"
        if resp.cancel_reason:
            return "cancelled"
        text = tool_results_text(self._responder_items(resp.input_items) + mcp_items)
        if "audio" in resp.modalities:
            return await self._emit_audio_message(resp, text)
        return await self._emit_text_message(resp, text)

    async def _emit_mcp_call(self, resp: _Response, call: ToolCall) -> dict[str, Any]:
        label = call.server_label or ""
        item: dict[str, Any] = {
            "id": new_id("item"),
            "type": "mcp_call",
            "server_label": label,
            "name": call.name,
            "arguments": "",
            "approval_request_id": None,
            "error": None,
            "output": None,
        }
        index = self._output_item_start(resp, item)
        arguments = json.dumps(call.arguments)
        ids = {"response_id": resp.id, "item_id": item["id"], "output_index": index}
        self._emit({"type": "response.mcp_call_arguments.delta", **ids, "delta": arguments})
        self._emit({"type": "response.mcp_call_arguments.done", **ids, "arguments": arguments})
        item["arguments"] = arguments
        progress = {"item_id": item["id"], "output_index": index}
        self._emit({"type": "response.mcp_call.in_progress", **progress})
        output = mcp_placeholder_output(label, call.name, call.arguments)
        item["output"] = output
        self._emit({"type": "response.mcp_call.completed", **progress})
        tokens = Tokens(text=text_tokens(call.name + arguments + output))
        self._output_item_finish(resp, item, index, tokens)
        return item

    async def _emit_function_call(self, resp: _Response, call: ToolCall) -> str:
        name = call.name
        item = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": name,
            "call_id": new_id("call"),
            "arguments": "",
        }
        index = self._output_item_start(resp, item)
        arguments = json.dumps(call.arguments)
        common = {
            "response_id": resp.id,
            "item_id": item["id"],
            "output_index": index,
            "call_id": item["call_id"],
        }
        self._emit({"type": "response.function_call_arguments.delta", **common, "delta": arguments})
        self._emit(
            {
                "type": "response.function_call_arguments.done",
                **common,
                "name": name,
                "arguments": arguments,
            }
        )
        item["arguments"] = arguments
        item["status"] = "completed"
        self._output_item_finish(resp, item, index, Tokens(text=text_tokens(name + arguments)))
        return "completed"

    def _over_budget(self, resp: _Response, tokens: Tokens) -> bool:
        return resp.max_output_tokens is not None and tokens.total > resp.max_output_tokens

    def _start_assistant_message(
        self, resp: _Response
    ) -> tuple[dict[str, Any], int, dict[str, Any]]:
        """A new assistant message output item: (item, output index, the ids its events carry)."""
        item = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        index = self._output_item_start(resp, item)
        ids = {
            "response_id": resp.id,
            "item_id": item["id"],
            "output_index": index,
            "content_index": 0,
        }
        return item, index, ids

    async def _emit_text_message(self, resp: _Response, text: str) -> str:
        item, index, ids = self._start_assistant_message(resp)
        self._emit(
            {"type": "response.content_part.added", **ids, "part": {"type": "text", "text": ""}}
        )
        sent = ""
        status = "completed"
        for i, word in enumerate(text.split(" ")):
            if resp.cancel_reason:
                status = "cancelled"
                break
            delta = word if i == 0 else " " + word
            if self._over_budget(resp, Tokens(text=text_tokens(sent + delta))):
                status = "incomplete"
                break
            sent += delta
            self._emit({"type": "response.output_text.delta", **ids, "delta": delta})
            await asyncio.sleep(0)
        self._emit({"type": "response.output_text.done", **ids, "text": sent})
        self._emit(
            {"type": "response.content_part.done", **ids, "part": {"type": "text", "text": sent}}
        )
        item["content"] = [{"type": "output_text", "text": sent}]
        item["status"] = "completed" if status == "completed" else "incomplete"
        self._output_item_finish(resp, item, index, Tokens(text=text_tokens(sent)))
        return status

    async def _emit_audio_message(self, resp: _Response, text: str) -> str:
        item, index, ids = self._start_assistant_message(resp)
        self._emit(
            {
                "type": "response.content_part.added",
                **ids,
                "part": {"type": "audio", "transcript": ""},
            }
        )
        fmt = resp.out_format.get("type", "audio/pcm")
        rate = audio.format_rate(fmt)
        pcm = await asyncio.to_thread(
            speech.synthesize, text, rate_hz=rate, voice=resp.voice, speed=resp.speed
        )
        encoded = await asyncio.to_thread(audio.encode_from_pcm16, pcm, fmt)
        width = audio.FORMAT_SAMPLE_WIDTH[fmt]
        chunk_bytes = max(width, rate * self.output_chunk_ms // 1000 * width)
        chunks = [encoded[i : i + chunk_bytes] for i in range(0, len(encoded), chunk_bytes)]
        words = text.split(" ")
        sent_words = 0
        transcript = ""
        sent_bytes = 0
        status = "completed"
        started = time.monotonic()
        for n, chunk in enumerate(chunks, start=1):
            if resp.cancel_reason:
                status = "cancelled"
                break
            upto = -(-n * len(words) // len(chunks))  # text leads its audio slightly
            new_text = transcript
            for i in range(sent_words, upto):
                new_text += words[i] if i == 0 else " " + words[i]
            ms = (sent_bytes + len(chunk)) / width * 1000 / rate
            if self._over_budget(
                resp, Tokens(text=text_tokens(new_text), audio=assistant_audio_tokens(ms))
            ):
                status = "incomplete"
                break
            if new_text != transcript:
                self._emit(
                    {
                        "type": "response.output_audio_transcript.delta",
                        **ids,
                        "delta": new_text[len(transcript) :],
                    }
                )
                transcript = new_text
                sent_words = upto
            self._emit(
                {
                    "type": "response.output_audio.delta",
                    **ids,
                    "delta": base64.b64encode(chunk).decode(),
                }
            )
            sent_bytes += len(chunk)
            self._assistant_audio_sent = True
            if self.realtime_pacing:
                ahead = started + ms / 1000 - time.monotonic()
                await asyncio.sleep(max(0.0, ahead))
            else:
                await asyncio.sleep(0)
        if not chunks and resp.cancel_reason:
            status = "cancelled"
        ms = sent_bytes / width * 1000 / rate
        self._emit({"type": "response.output_audio.done", **ids})
        self._emit(
            {"type": "response.output_audio_transcript.done", **ids, "transcript": transcript}
        )
        self._emit(
            {
                "type": "response.content_part.done",
                **ids,
                "part": {"type": "audio", "transcript": transcript},
            }
        )
        item["content"] = [{"type": "output_audio", "transcript": transcript}]
        item["status"] = "completed" if status == "completed" else "incomplete"
        tokens = Tokens(text=text_tokens(transcript), audio=assistant_audio_tokens(ms))
        self._output_item_finish(resp, item, index, tokens, ms)
        return status

    # --- translation sessions ---------------------------------------------------------------

    async def _dispatch_translation(self, kind: str, event: dict[str, Any]) -> None:
        handler = {
            "session.update": self._on_translation_update,
            "session.input_audio_buffer.append": self._on_translation_append,
            "session.close": self._on_translation_close,
        }.get(kind)
        if handler is None:
            supported = ", ".join(f"'{t}'" for t in TRANSLATION_CLIENT_EVENT_TYPES)
            raise ProtocolError(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: {supported}.",
                param="type",
            )
        await handler(event)

    async def _on_translation_update(self, event: dict[str, Any]) -> None:
        from openai.types.realtime import RealtimeTranslationSessionUpdateEvent

        session = event.get("session")
        if not isinstance(session, dict):
            raise ProtocolError(
                "missing_required_parameter",
                "Missing required parameter: 'session'.",
                param="session",
            )
        _validate(RealtimeTranslationSessionUpdateEvent, event)
        if session.get("type", "translation") != "translation":
            raise ProtocolError(
                "invalid_value",
                "The session type is set at creation and cannot be changed with session.update.",
                param="session.type",
            )
        if session.get("model", self.model) != self.model:
            raise ProtocolError(
                "invalid_value",
                "The session model is set at creation and cannot be changed with session.update.",
                param="session.model",
            )
        unknown = sorted(set(session) - {"type", "model", "audio"})
        if unknown:
            raise ProtocolError(
                "unknown_parameter",
                f"Unknown parameter: 'session.{unknown[0]}'.",
                param=f"session.{unknown[0]}",
            )
        audio_update = session.get("audio") or {}
        allowed = {"input": {"transcription", "noise_reduction"}, "output": {"language"}}
        for part, value in audio_update.items():
            keys = allowed.get(part)
            bad = [part] if keys is None else sorted(set(value or {}) - keys)
            if bad:
                name = f"session.audio.{part}" + (f".{bad[0]}" if keys is not None else "")
                raise ProtocolError(
                    "unknown_parameter", f"Unknown parameter: '{name}'.", param=name
                )
        audio_cfg = self.config["audio"]
        for part in ("input", "output"):
            for key, value in (audio_update.get(part) or {}).items():
                audio_cfg[part][key] = value
        self._emit({"type": "session.updated", "session": self.config})

    async def _on_translation_append(self, event: dict[str, Any]) -> None:
        pcm = self._decode_audio(event.get("audio"))
        self._buffer += pcm
        self._appended_ms += len(pcm) / 2 * 1000 / self._input_rate
        assert self._vad is not None
        for vad_event in self._vad.feed(pcm):
            at_ms = vad_event.ms + self._vad_offset_ms
            if vad_event.kind == "speech_started":
                self._vad_start_ms = int(at_ms)
            else:
                await self._translate(self._slice_buffer(self._vad_start_ms, at_ms), at_ms)
        if not self._vad.in_speech:
            excess = self._buffer_ms() - 2000
            if excess > 0:
                self._slice_buffer(self._buffer_origin_ms, self._buffer_origin_ms + excess)

    async def _on_translation_close(self, event: dict[str, Any]) -> None:
        """Flush the utterance in progress, finish the pending output, then close 1000."""
        if self._vad is not None and self._vad.in_speech:
            self._vad.reset()
            pcm = self._slice_buffer(self._vad_start_ms, self._appended_ms)
            await self._translate(pcm, self._appended_ms)
        if self._translation_tail is not None:
            with contextlib.suppress(Exception):
                await self._translation_tail
        self._emit({"type": "session.closed"})
        await self.close(1000, "session closed")

    async def _translate(self, pcm: bytes, end_ms: float) -> None:
        """Recognise one utterance; queue its (placeholder) translation for output."""
        transcript = await asyncio.to_thread(speech.transcribe, pcm, self._input_rate)
        if not transcript.strip():
            return
        elapsed = int(end_ms) // TRANSLATION_FRAME_MS * TRANSLATION_FRAME_MS
        if self.config["audio"]["input"].get("transcription"):
            for i, word in enumerate(transcript.split()):
                spaced = i > 0 or self._translated_in
                self._emit(
                    {
                        "type": "session.input_transcript.delta",
                        "delta": " " + word if spaced else word,
                        "elapsed_ms": elapsed,
                    }
                )
            self._translated_in = True
        language = (self.config["audio"].get("output") or {}).get("language") or "en"
        previous = self._translation_tail
        self._translation_tail = asyncio.create_task(
            self._speak_translation(previous, transcript, language, elapsed),
            name=f"translation-{self.session_id}",
        )

    async def _speak_translation(
        self, previous: asyncio.Task | None, transcript: str, language: str, elapsed: int
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        text = translation_placeholder(language, transcript)
        pcm = await asyncio.to_thread(synthesize_in_language, transcript, language)
        chunk_bytes = max(2, TRANSLATION_RATE * self.output_chunk_ms // 1000 * 2)
        chunks = [pcm[i : i + chunk_bytes] for i in range(0, len(pcm), chunk_bytes)] or [b""]
        words = text.split(" ")
        sent_words = 0
        started = time.monotonic()
        for n, chunk in enumerate(chunks, start=1):
            upto = -(-n * len(words) // len(chunks))  # text leads its audio slightly
            if upto > sent_words:
                delta = " ".join(words[sent_words:upto])
                if sent_words > 0 or self._translated_out:
                    delta = " " + delta
                self._emit(
                    {
                        "type": "session.output_transcript.delta",
                        "delta": delta,
                        "elapsed_ms": elapsed,
                    }
                )
                self._translated_out = True
                sent_words = upto
            if chunk:
                self._emit(
                    {
                        "type": "session.output_audio.delta",
                        "delta": base64.b64encode(chunk).decode(),
                        "format": "pcm16",
                        "sample_rate": TRANSLATION_RATE,
                        "channels": 1,
                        "elapsed_ms": elapsed,
                    }
                )
            if self.realtime_pacing:
                ms = n * self.output_chunk_ms
                await asyncio.sleep(max(0.0, started + ms / 1000 - time.monotonic()))
            else:
                await asyncio.sleep(0)


class LocalConnection:
    """In-process connection to a :class:`LocalEngineSession`, shaped like a ``websockets``
    client connection: ``send``/``recv``/``close``, ``close_code``/``close_reason``, and
    ``async for message in conn``."""

    def __init__(self, session: LocalEngineSession) -> None:
        self.session = session

    @property
    def close_code(self) -> int | None:
        return self.session.close_code

    @property
    def close_reason(self) -> str:
        return self.session.close_reason

    async def send(self, message: str | bytes) -> None:
        await self.session.receive(message)

    async def recv(self) -> str:
        return await self.session.next_event()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.session.close(code, reason, drain=False)

    def __aiter__(self) -> LocalConnection:
        return self

    async def __anext__(self) -> str:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> LocalConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def connect_local(
    model: str = DEFAULT_MODEL,
    *,
    max_session_seconds: float = 3600.0,
    intent: str | None = None,
    realtime_pacing: bool = False,
    output_chunk_ms: int = OUTPUT_CHUNK_MS,
) -> LocalConnection:
    """Open an in-process session; its first event (``session.created``) is ready to recv.

    ``intent``: ``None`` (realtime; translation for a ``gpt-realtime-translate`` model),
    ``"transcription"`` or ``"translation"``."""
    session = LocalEngineSession(
        model,
        max_session_seconds=max_session_seconds,
        intent=intent,
        realtime_pacing=realtime_pacing,
        output_chunk_ms=output_chunk_ms,
    )
    await session.start()
    return LocalConnection(session)


if __name__ == "__main__":  # python -m agents.realtime.engine --port 8765
    from .server import main

    main()
