"""The realtime (and transcription) session: the shell that ties the parts together.

Client events are handled in order by the shell's worker; speech recognition runs beside the
turn (one recognition at a time, in order), synthesis in worker threads, and each response
streams from its own task, so ``response.cancel`` and barge-in are handled while it plays.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from typing import Any

from .. import audio, speech
from ..protocol import ProtocolError, Tokens, new_id
from ..responder import ToolCall, decide, mcp_tool_names, tool_results_text
from . import config as session_config
from .conversation import Conversation, item_tokens, user_audio_item, user_audio_tokens_for
from .input_audio import InputAudio, SpeechStarted, decode_audio
from .responses import InputCache, RateLimits, Response, ResponseStream, new_response
from .shell import EngineShell, log
from .speaking import OUTPUT_CHUNK_MS, Pacer, speech_chunks
from .transcription import transcription_events

DEFAULT_MODEL = "gpt-realtime-2"


def list_mcp_tools(
    tools: list[Any], listed: dict[str, str], conversation: Conversation
) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Imitate importing the tools of MCP servers the session just gained: an
    ``mcp_list_tools`` item listing the server's ``allowed_tools`` (the engine makes no network
    calls, so a server without ``allowed_tools`` lists none). Returns (listed now, events)."""
    now: dict[str, str] = {}
    events: list[dict[str, Any]] = []
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "mcp":
            continue
        label = tool.get("server_label") or ""
        signature = json.dumps(
            [tool.get(k) for k in ("server_url", "connector_id", "allowed_tools")], sort_keys=True
        )
        now[label] = signature
        if listed.get(label) == signature:
            continue
        item: dict[str, Any] = {
            "id": new_id("item"),
            "type": "mcp_list_tools",
            "server_label": label,
            "tools": [],
        }
        events.append(conversation.add(item, Tokens()))
        events.append({"type": "mcp_list_tools.in_progress", "item_id": item["id"]})
        item["tools"] = [
            {"name": name, "input_schema": {"type": "object"}} for name in mcp_tool_names(tool)
        ]
        events.append({"type": "mcp_list_tools.completed", "item_id": item["id"]})
        events.append(conversation.done_event(item))
    return now, events


class LocalEngineSession(EngineShell):
    """One realtime or transcription session (``intent="transcription"``). Transport-agnostic:
    feed client events (JSON text) with :meth:`receive`, read server events with
    :meth:`next_event`. Translation sessions are :class:`TranslationSession`."""

    handlers = {
        "session.update": "_on_session_update",
        "input_audio_buffer.append": "_on_append",
        "input_audio_buffer.commit": "_on_commit",
        "input_audio_buffer.clear": "_on_clear",
        "output_audio_buffer.clear": "_on_output_clear",
        "conversation.item.create": "_on_item_create",
        "conversation.item.retrieve": "_on_item_retrieve",
        "conversation.item.truncate": "_on_item_truncate",
        "conversation.item.delete": "_on_item_delete",
        "response.create": "_on_response_create",
        "response.cancel": "_on_response_cancel",
    }

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        max_session_seconds: float = 3600.0,
        intent: str | None = None,
        realtime_pacing: bool = False,
        output_chunk_ms: int = OUTPUT_CHUNK_MS,
    ) -> None:
        super().__init__(max_session_seconds=max_session_seconds, realtime_pacing=realtime_pacing)
        self.model = model
        self.output_chunk_ms = output_chunk_ms
        kind = "transcription" if intent == "transcription" else "realtime"
        self.config = session_config.initial_config(kind, self.session_id, model, self.expires_at)
        self.conversation = Conversation()
        rate = session_config.input_rate(self.config)
        self.input = InputAudio(rate, session_config.turn_detector(self._turn_detection, rate))
        self._turn_item_id: str | None = None  # the user item of the turn being spoken
        self._response: Response | None = None
        self._input_cache = InputCache()
        self._rate_limits = RateLimits()
        self._assistant_audio_sent = False
        self._mcp_listed: dict[str, str] = {}  # server_label -> listed tool config
        self._recognising: dict[str, asyncio.Task[None]] = {}  # user item id -> its recognition
        self._last_recognition: asyncio.Task[None] | None = None

    @property
    def items(self) -> list[dict[str, Any]]:
        return self.conversation.items

    @property
    def is_transcription(self) -> bool:
        return self.config.get("type") == "transcription"

    @property
    def input_format(self) -> str:
        return session_config.input_format(self.config)

    @property
    def _turn_detection(self) -> dict[str, Any]:
        return self.config["audio"]["input"].get("turn_detection") or {}

    def background_tasks(self) -> list[asyncio.Task[None] | None]:
        response = self._response.task if self._response is not None else None
        return [response, *self._recognising.values()]

    # --- session ------------------------------------------------------------------------

    async def _on_session_update(self, event: dict[str, Any]) -> None:
        old_input = self.config["audio"]["input"]
        self.config = session_config.realtime_update(
            self.config, event, model=self.model, assistant_audio_sent=self._assistant_audio_sent
        )
        new_input = self.config["audio"]["input"]
        new_format = new_input.get("format") != old_input.get("format")
        if new_format or new_input.get("turn_detection") != old_input.get("turn_detection"):
            rate = session_config.input_rate(self.config)
            detector = session_config.turn_detector(new_input.get("turn_detection"), rate)
            self.input.reconfigure(rate, detector, new_format=new_format)
            self._turn_item_id = None
        self.emit({"type": "session.updated", "session": self.config})
        if not self.is_transcription:
            tools = self.config.get("tools") or []
            self._mcp_listed, events = list_mcp_tools(tools, self._mcp_listed, self.conversation)
            self.emit(*events)

    # --- input audio --------------------------------------------------------------------

    async def _on_append(self, event: dict[str, Any]) -> None:
        pcm = decode_audio(event.get("audio"), self.input_format)
        for found in self.input.append(pcm):
            if isinstance(found, SpeechStarted):
                self._turn_item_id = new_id("item")
                self.emit(
                    {
                        "type": "input_audio_buffer.speech_started",
                        "audio_start_ms": found.ms,
                        "item_id": self._turn_item_id,
                    }
                )
                if self._response is not None and self._turn_detection.get(
                    "interrupt_response", True
                ):
                    self._response.cancel_reason = "turn_detected"
                continue
            item_id = self._turn_item_id or new_id("item")
            self._turn_item_id = None
            self.emit(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": found.ms,
                    "item_id": item_id,
                }
            )
            self._commit(item_id, found.pcm)
            if not self.is_transcription and self._turn_detection.get("create_response", True):
                await self._wait_for_cancelled_response()
                if self._response is None:
                    self._start_response({})

    async def _wait_for_cancelled_response(self, timeout: float = 5.0) -> None:
        """Let a response that barge-in cancelled finish (its response.done) first."""
        resp = self._response
        if resp is not None and resp.cancel_reason and resp.task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(resp.task), timeout)

    async def _on_commit(self, event: dict[str, Any]) -> None:
        pcm = self.input.commit()
        item_id = self._turn_item_id or new_id("item")
        self._turn_item_id = None
        self._commit(item_id, pcm)

    async def _on_clear(self, event: dict[str, Any]) -> None:
        self.input.clear()
        self._turn_item_id = None
        self.emit({"type": "input_audio_buffer.cleared"})

    async def _on_output_clear(self, event: dict[str, Any]) -> None:
        raise ProtocolError(
            "invalid_value",
            "output_audio_buffer.clear is only supported over WebRTC and SIP.",
            param="type",
        )

    def _commit(self, item_id: str, pcm: bytes) -> None:
        """Committed input audio becomes a user item now; recognition runs beside the turn
        (as at OpenAI, its transcript may follow response.created), one at a time in order."""
        ms = self.input.ms(pcm)
        item = user_audio_item(item_id)
        added = self.conversation.add(item, user_audio_tokens_for(ms), audio_ms=ms)
        self.emit(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": added["previous_item_id"],
            },
            added,
            self.conversation.done_event(item),
        )
        transcription = self.config["audio"]["input"].get("transcription")
        task = asyncio.create_task(
            self._recognise(item, pcm, ms, transcription, self._last_recognition),
            name=f"recognise-{item_id}",
        )
        self._recognising[item_id] = self._last_recognition = task

    async def _recognise(
        self,
        item: dict[str, Any],
        pcm: bytes,
        ms: float,
        transcription: dict[str, Any] | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        try:
            heard = await asyncio.to_thread(speech.transcribe, pcm, self.input.rate)
        finally:
            self._recognising.pop(item["id"], None)
        self.conversation.heard[item["id"]] = heard
        if transcription:
            item["content"][0]["transcript"] = heard
            self.emit(*transcription_events(item["id"], heard, ms, transcription))

    # --- conversation items -------------------------------------------------------------

    async def _on_item_create(self, event: dict[str, Any]) -> None:
        from openai.types.realtime import ConversationItemCreateEvent

        if not isinstance(event.get("item"), dict):
            raise ProtocolError(
                "missing_required_parameter", "Missing required parameter: 'item'.", param="item"
            )
        session_config.validate(ConversationItemCreateEvent, event)
        item = copy.deepcopy(event["item"])
        item_id = item.get("id") or new_id("item")
        if self.conversation.find(item_id) is not None:
            raise ProtocolError(
                "invalid_value", f"Item with id '{item_id}' already exists.", param="item.id"
            )
        previous = event.get("previous_item_id")
        if previous not in (None, "root") and self.conversation.find(previous) is None:
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
        audio_ms = 0.0
        for part in item.get("content") or []:
            if part.get("type") == "input_audio" and part.get("audio"):
                pcm = decode_audio(part.pop("audio"), self.input_format, "item.content.audio")
                audio_ms += self.input.ms(pcm)
                part.setdefault("transcript", None)
                heard.append(
                    part.get("transcript")
                    or await asyncio.to_thread(speech.transcribe, pcm, self.input.rate)
                )
        if heard:
            self.conversation.heard[item_id] = " ".join(heard)
        tokens = item_tokens(item) + user_audio_tokens_for(audio_ms)
        self.emit(
            self.conversation.add(item, tokens, after=previous, audio_ms=audio_ms),
            self.conversation.done_event(item),
        )

    async def _on_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.conversation.get(event.get("item_id"))
        self.emit({"type": "conversation.item.retrieved", "item": item})

    async def _on_item_delete(self, event: dict[str, Any]) -> None:
        self.emit(self.conversation.delete(event.get("item_id")))

    async def _on_item_truncate(self, event: dict[str, Any]) -> None:
        from openai.types.realtime import ConversationItemTruncateEvent

        session_config.validate(ConversationItemTruncateEvent, event)
        self.emit(
            self.conversation.truncate(
                event["item_id"], event["content_index"], event["audio_end_ms"]
            )
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
        session_config.validate(ResponseCreateEvent, event)
        self._start_response(event.get("response") or {})

    async def _on_response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        if self._response is None or (wanted and wanted != self._response.id):
            raise ProtocolError(
                "response_cancel_not_active", "Cancellation failed: no active response found."
            )
        self._response.cancel_reason = "client_cancelled"

    def _start_response(self, overrides: dict[str, Any]) -> None:
        resp = new_response(self.config, overrides, self.conversation, self._input_cache)
        stream = ResponseStream(resp, self.conversation)
        self._response = resp
        # response.created goes out now, before any input transcript (as at OpenAI).
        self.emit(stream.created())
        resp.task = asyncio.create_task(self._run_response(stream), name=f"response-{resp.id}")

    async def _run_response(self, stream: ResponseStream) -> None:
        resp = stream.resp
        status = "completed"
        details: dict[str, Any] | None = None
        try:
            # The answer needs what was heard: wait for the input items' recognition.
            for item in resp.input_items:
                pending = self._recognising.get(item.get("id", ""))
                if pending is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(pending)
            reply = decide(
                self.conversation.as_heard(resp.input_items),
                instructions=resp.instructions,
                tools=resp.tools,
                tool_choice=resp.tool_choice,
            )
            if reply.calls:
                status = await self._make_tool_calls(stream, reply.calls)
            else:
                status = await self._say(stream, reply.text)
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
            done = stream.done(status, details)
            self.emit(
                done, self._rate_limits.updated_event(done["response"]["usage"]["total_tokens"])
            )
            if self._response is resp:
                self._response = None

    async def _make_tool_calls(self, stream: ResponseStream, calls: list[ToolCall]) -> str:
        """One output item per call (parallel calls). With only MCP calls (run "remotely"
        by the engine) the same response then speaks their results in a message item;
        with function calls the client answers them and a later response speaks all."""
        resp = stream.resp
        mcp_items: list[dict[str, Any]] = []
        for call in calls:
            if resp.cancel_reason:
                return "cancelled"
            if call.kind == "mcp":
                item, events = stream.mcp_call(call)
                mcp_items.append(item)
            else:
                events = stream.function_call(call)
            self.emit(*events)
            await asyncio.sleep(0)
        if any(call.kind == "function" for call in calls) or not mcp_items:
            return "completed"
        if resp.cancel_reason:
            return "cancelled"
        heard = self.conversation.as_heard(resp.input_items)
        return await self._say(stream, tool_results_text(heard + mcp_items))

    async def _say(self, stream: ResponseStream, text: str) -> str:
        if "audio" in stream.resp.modalities:
            return await self._speak(stream, text)
        return await self._write(stream, text)

    async def _write(self, stream: ResponseStream, text: str) -> str:
        message, events = stream.message_start(audio=False)
        self.emit(*events)
        status = "completed"
        for i, word in enumerate(text.split(" ")):
            if stream.resp.cancel_reason:
                status = "cancelled"
                break
            events = stream.text_delta(message, word if i == 0 else " " + word)
            if not events:
                status = "incomplete"
                break
            self.emit(*events)
            await asyncio.sleep(0)
        self.emit(*stream.text_done(message, status))
        return status

    async def _speak(self, stream: ResponseStream, text: str) -> str:
        resp = stream.resp
        message, events = stream.message_start(audio=True)
        self.emit(*events)
        fmt = resp.out_format.get("type", "audio/pcm")
        rate = audio.format_rate(fmt)
        pcm = await asyncio.to_thread(
            speech.synthesize, text, rate_hz=rate, voice=resp.voice, speed=resp.speed
        )
        encoded = await asyncio.to_thread(audio.encode_from_pcm16, pcm, fmt)
        chunks = speech_chunks(
            text,
            encoded,
            rate=rate,
            sample_width=audio.FORMAT_SAMPLE_WIDTH[fmt],
            chunk_ms=self.output_chunk_ms,
        )
        status = "cancelled" if not chunks and resp.cancel_reason else "completed"
        pacer = Pacer(self.realtime_pacing)
        for chunk in chunks:
            if resp.cancel_reason:
                status = "cancelled"
                break
            events = stream.audio_delta(message, chunk.text, chunk.audio, chunk.end_ms)
            if not events:
                status = "incomplete"
                break
            self.emit(*events)
            self._assistant_audio_sent = True
            await pacer.until(chunk.end_ms)
        self.emit(*stream.audio_done(message, status))
        return status
