"""Responses: what a response runs with, what it costs, and the events that stream it.

No I/O here. :func:`new_response` reads the session configuration and the conversation;
:class:`ResponseStream` turns each step of an answer (a tool call, a text word, an audio chunk)
into server events and keeps the response's output and token counts up to date. The session
shell decides the steps (the responder), waits for synthesis and paces the audio.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ..protocol import Tokens, assistant_audio_tokens, new_id, text_tokens, usage_payload
from ..responder import ToolCall, tool_words
from .conversation import Conversation


def mcp_placeholder_output(server_label: str, name: str, arguments: dict[str, Any]) -> str:
    """The output of an imitated MCP call: the engine never contacts MCP servers."""
    said = ", ".join(f"{tool_words(str(k))} {v}" for k, v in arguments.items())
    called = f"{name} called with {said}" if said else f"{name} called"
    return f"[local engine: MCP server {server_label} not contacted] {called}"


@dataclass
class Response:
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
    task: asyncio.Task[None] | None = None

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

    def over_budget(self, tokens: Tokens) -> bool:
        return self.max_output_tokens is not None and tokens.total > self.max_output_tokens

    def usage(self) -> dict[str, Any]:
        return usage_payload(self.input_tokens, self.cached_tokens, self.output_tokens)


class InputCache:
    """Cached input tokens: the longest prefix of a response's input (instructions, then items,
    each with its token counts) equal to the previous response's."""

    def __init__(self) -> None:
        self._previous: list[tuple[str, Tokens]] = []

    def count(self, segments: list[tuple[str, Tokens]]) -> tuple[Tokens, Tokens]:
        """(input tokens, cached tokens) of a response with these input segments."""
        total = Tokens()
        for _, tokens in segments:
            total += tokens
        cached = Tokens()
        for segment, previous in zip(segments, self._previous, strict=False):
            if segment != previous:
                break
            cached += segment[1]
        self._previous = segments
        return total, cached


def new_response(
    config: dict[str, Any],
    overrides: dict[str, Any],
    conversation: Conversation,
    cache: InputCache,
) -> Response:
    """A response to ``response.create`` (``overrides`` = its ``response`` object) or to a
    turn (no overrides), with its input and cached tokens counted."""
    out_cfg = config["audio"]["output"]
    audio_override = (overrides.get("audio") or {}).get("output") or {}
    out_format = dict(audio_override.get("format") or out_cfg["format"])
    if out_format.get("type", "audio/pcm") == "audio/pcm":
        out_format = {"type": "audio/pcm", "rate": 24000}
    max_tokens = overrides.get("max_output_tokens", config.get("max_output_tokens"))
    in_conversation = overrides.get("conversation", "auto") != "none"
    if overrides.get("input") is not None:
        input_items = []
        for entry in overrides["input"]:
            if entry.get("type") == "item_reference":
                found = conversation.find(entry.get("id"))
                if found is not None:
                    input_items.append(found)
            else:
                input_items.append(entry)
    elif in_conversation:
        input_items = list(conversation.items)
    else:
        input_items = []
    voice = audio_override.get("voice") or out_cfg.get("voice") or "alloy"
    if isinstance(voice, dict):
        voice = voice.get("id", "alloy")
    instructions = overrides.get("instructions", config.get("instructions")) or ""
    resp = Response(
        id=new_id("resp"),
        instructions=instructions,
        modalities=list(
            overrides.get("output_modalities") or config.get("output_modalities") or ["audio"]
        ),
        tools=list(overrides.get("tools", config.get("tools")) or []),
        tool_choice=overrides.get("tool_choice", config.get("tool_choice")) or "auto",
        max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
        out_format=out_format,
        voice=voice,
        speed=float(out_cfg.get("speed") or 1.0),
        in_conversation=in_conversation,
        input_items=input_items,
        metadata=overrides.get("metadata"),
    )
    segments = [("instructions:" + instructions, Tokens(text=text_tokens(instructions)))]
    segments += [(str(i.get("id")), conversation.tokens_of(i)) for i in input_items]
    resp.input_tokens, resp.cached_tokens = cache.count(segments)
    return resp


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
class Message:
    """An assistant message being streamed: its item, output index and event ids."""

    item: dict[str, Any]
    index: int
    ids: dict[str, Any]
    text: str = ""  # sent so far (text, or audio transcript)
    audio_ms: float = 0.0


class ResponseStream:
    """The events of one response, step by step; keeps its output and the conversation."""

    def __init__(self, resp: Response, conversation: Conversation) -> None:
        self.resp = resp
        self.conversation = conversation

    def created(self) -> dict[str, Any]:
        return {"type": "response.created", "response": self.resp.payload("in_progress")}

    def done(self, status: str, details: Any = None) -> dict[str, Any]:
        payload = self.resp.payload(status, self.resp.usage(), details)
        return {"type": "response.done", "response": payload}

    # --- output items ---------------------------------------------------------------------

    def _item_added(self, item: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
        index = len(self.resp.output_items)
        self.resp.output_items.append(item)
        events = [
            {
                "type": "response.output_item.added",
                "response_id": self.resp.id,
                "output_index": index,
                "item": copy.deepcopy(item),  # as it is now: it changes as it streams
            }
        ]
        if self.resp.in_conversation:
            events.append(self.conversation.add(item, Tokens()))
        return index, events

    def _item_done(
        self, item: dict[str, Any], index: int, tokens: Tokens, ms: float = 0.0
    ) -> list[dict[str, Any]]:
        self.resp.output_tokens += tokens
        events = []
        if self.resp.in_conversation:
            self.conversation.finish(item, tokens, ms)
            events.append(self.conversation.done_event(item))
        events.append(
            {
                "type": "response.output_item.done",
                "response_id": self.resp.id,
                "output_index": index,
                "item": copy.deepcopy(item),  # as it is now: it changes as it streams
            }
        )
        return events

    def function_call(self, call: ToolCall) -> list[dict[str, Any]]:
        item = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": call.name,
            "call_id": new_id("call"),
            "arguments": "",
        }
        index, events = self._item_added(item)
        arguments = json.dumps(call.arguments)
        common = {
            "response_id": self.resp.id,
            "item_id": item["id"],
            "output_index": index,
            "call_id": item["call_id"],
        }
        events += [
            {"type": "response.function_call_arguments.delta", **common, "delta": arguments},
            {
                "type": "response.function_call_arguments.done",
                **common,
                "name": call.name,
                "arguments": arguments,
            },
        ]
        item["arguments"] = arguments
        item["status"] = "completed"
        tokens = Tokens(text=text_tokens(call.name + arguments))
        return events + self._item_done(item, index, tokens)

    def mcp_call(self, call: ToolCall) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """An imitated MCP call (no server is contacted): the item and its events."""
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
        index, events = self._item_added(item)
        arguments = json.dumps(call.arguments)
        ids = {"response_id": self.resp.id, "item_id": item["id"], "output_index": index}
        progress = {"item_id": item["id"], "output_index": index}
        output = mcp_placeholder_output(label, call.name, call.arguments)
        events += [
            {"type": "response.mcp_call_arguments.delta", **ids, "delta": arguments},
            {"type": "response.mcp_call_arguments.done", **ids, "arguments": arguments},
            {"type": "response.mcp_call.in_progress", **progress},
            {"type": "response.mcp_call.completed", **progress},
        ]
        item["arguments"] = arguments
        item["output"] = output
        tokens = Tokens(text=text_tokens(call.name + arguments + output))
        return item, events + self._item_done(item, index, tokens)

    # --- messages -------------------------------------------------------------------------

    def message_start(self, audio: bool) -> tuple[Message, list[dict[str, Any]]]:
        item = {
            "id": new_id("item"),
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        index, events = self._item_added(item)
        ids = {
            "response_id": self.resp.id,
            "item_id": item["id"],
            "output_index": index,
            "content_index": 0,
        }
        part = {"type": "audio", "transcript": ""} if audio else {"type": "text", "text": ""}
        events.append({"type": "response.content_part.added", **ids, "part": part})
        return Message(item, index, ids), events

    def text_delta(self, message: Message, delta: str) -> list[dict[str, Any]]:
        """The next words of a text answer; [] when they would pass max_output_tokens."""
        if self.resp.over_budget(Tokens(text=text_tokens(message.text + delta))):
            return []
        message.text += delta
        return [{"type": "response.output_text.delta", **message.ids, "delta": delta}]

    def audio_delta(
        self, message: Message, text: str, audio: bytes, end_ms: float
    ) -> list[dict[str, Any]]:
        """The next audio chunk and the words said in it (text first); [] when they would pass
        max_output_tokens."""
        tokens = Tokens(text=text_tokens(message.text + text), audio=assistant_audio_tokens(end_ms))
        if self.resp.over_budget(tokens):
            return []
        events = []
        if text:
            message.text += text
            events.append(
                {"type": "response.output_audio_transcript.delta", **message.ids, "delta": text}
            )
        message.audio_ms = end_ms
        events.append(
            {
                "type": "response.output_audio.delta",
                **message.ids,
                "delta": base64.b64encode(audio).decode(),
            }
        )
        return events

    def text_done(self, message: Message, status: str) -> list[dict[str, Any]]:
        ids, text = message.ids, message.text
        events = [
            {"type": "response.output_text.done", **ids, "text": text},
            {"type": "response.content_part.done", **ids, "part": {"type": "text", "text": text}},
        ]
        message.item["content"] = [{"type": "output_text", "text": text}]
        message.item["status"] = "completed" if status == "completed" else "incomplete"
        tokens = Tokens(text=text_tokens(text))
        return events + self._item_done(message.item, message.index, tokens)

    def audio_done(self, message: Message, status: str) -> list[dict[str, Any]]:
        ids, transcript = message.ids, message.text
        part = {"type": "audio", "transcript": transcript}
        events = [
            {"type": "response.output_audio.done", **ids},
            {"type": "response.output_audio_transcript.done", **ids, "transcript": transcript},
            {"type": "response.content_part.done", **ids, "part": part},
        ]
        message.item["content"] = [{"type": "output_audio", "transcript": transcript}]
        message.item["status"] = "completed" if status == "completed" else "incomplete"
        tokens = Tokens(
            text=text_tokens(transcript), audio=assistant_audio_tokens(message.audio_ms)
        )
        return events + self._item_done(message.item, message.index, tokens, message.audio_ms)
