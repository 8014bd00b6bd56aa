"""The conversation: its items in order, what each costs in tokens, what was heard in them.

No I/O: methods change the conversation and return the server events that say so.
"""

from __future__ import annotations

import copy
from typing import Any

from ..protocol import (
    IMAGE_TOKENS,
    ProtocolError,
    Tokens,
    assistant_audio_tokens,
    text_tokens,
    user_audio_tokens,
)


def item_tokens(item: dict[str, Any]) -> Tokens:
    """Token counts of an item as a client created it (see protocol.py for the rates),
    without the audio of its ``input_audio`` parts (the caller knows how long that is)."""
    kind = item.get("type")
    if kind == "function_call":
        return Tokens(text=text_tokens((item.get("name") or "") + (item.get("arguments") or "")))
    if kind == "function_call_output":
        return Tokens(text=text_tokens(item.get("output")))
    if kind == "mcp_call":
        text = (item.get("name") or "") + (item.get("arguments") or "")
        return Tokens(text=text_tokens(text + (item.get("output") or "")))
    if kind != "message":
        return Tokens()
    total = Tokens()
    for part in item.get("content") or []:
        ptype = part.get("type")
        if ptype in ("input_text", "output_text", "text"):
            total += Tokens(text=text_tokens(part.get("text")))
        elif ptype == "input_image":
            total += Tokens(image=IMAGE_TOKENS)
        elif ptype == "output_audio":
            total += Tokens(text=text_tokens(part.get("transcript")))
    return total


def _not_found(item_id: Any, param: str = "item_id") -> ProtocolError:
    return ProtocolError("item_not_found", f"Item with item_id '{item_id}' not found.", param=param)


class Conversation:
    """Items oldest first, with per item: tokens, audio duration (ms) and words heard."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.tokens: dict[str, Tokens] = {}
        self.audio_ms: dict[str, float] = {}
        self.heard: dict[str, str] = {}

    def find(self, item_id: Any) -> dict[str, Any] | None:
        return next((i for i in self.items if i.get("id") == item_id), None)

    def get(self, item_id: Any) -> dict[str, Any]:
        item = self.find(item_id)
        if item is None:
            raise _not_found(item_id)
        return item

    @property
    def last_id(self) -> str | None:
        return self.items[-1]["id"] if self.items else None

    def previous_id(self, item: dict[str, Any]) -> str | None:
        """The id of the item before ``item`` (None when it is first or not in it)."""
        position = next((n for n, i in enumerate(self.items) if i is item), -1)
        return self.items[position - 1]["id"] if position > 0 else None

    def add(
        self,
        item: dict[str, Any],
        tokens: Tokens,
        *,
        after: str | None = None,
        audio_ms: float = 0.0,
    ) -> dict[str, Any]:
        """Insert ``item`` after the item ``after`` ("root": first; None: last); returns
        ``conversation.item.added``, whose ``previous_item_id`` is null or a real id."""
        if after == "root":
            index = 0
        else:
            previous = self.find(after) if after is not None else None
            index = self.items.index(previous) + 1 if previous is not None else len(self.items)
        self.items.insert(index, item)
        self.tokens[item["id"]] = tokens
        if audio_ms:
            self.audio_ms[item["id"]] = audio_ms
        return self.added_event(item)

    # Events carry a copy of the item as it is now: it changes as a response streams.
    def added_event(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "conversation.item.added",
            "previous_item_id": self.previous_id(item),
            "item": copy.deepcopy(item),
        }

    def done_event(self, item: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "conversation.item.done",
            "previous_item_id": self.previous_id(item),
            "item": copy.deepcopy(item),
        }

    def finish(self, item: dict[str, Any], tokens: Tokens, audio_ms: float = 0.0) -> None:
        """An assistant item is complete: what it costs as input from now on."""
        self.tokens[item["id"]] = tokens
        if audio_ms:
            self.audio_ms[item["id"]] = audio_ms

    def delete(self, item_id: Any) -> dict[str, Any]:
        item = self.get(item_id)
        self.items.remove(item)
        return {"type": "conversation.item.deleted", "item_id": item["id"]}

    def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
        """Cut an assistant audio message at ``audio_end_ms`` (the client played that much)."""
        item = self.get(item_id)
        content = item.get("content") or []
        if (
            item.get("role") != "assistant"
            or content_index >= len(content)
            or content[content_index].get("type") != "output_audio"
        ):
            raise ProtocolError(
                "invalid_value",
                "Only assistant messages with audio content can be truncated.",
                param="content_index",
            )
        total_ms = self.audio_ms.get(item["id"], 0.0)
        if audio_end_ms > total_ms + 0.5:
            raise ProtocolError(
                "invalid_value",
                f"audio_end_ms ({audio_end_ms}) is longer than the audio ({total_ms:.0f}ms).",
                param="audio_end_ms",
            )
        content[content_index]["transcript"] = ""  # the server drops the transcript, as OpenAI
        self.audio_ms[item["id"]] = float(audio_end_ms)
        self.tokens[item["id"]] = Tokens(audio=assistant_audio_tokens(audio_end_ms))
        return {
            "type": "conversation.item.truncated",
            "item_id": item["id"],
            "content_index": content_index,
            "audio_end_ms": audio_end_ms,
        }

    def tokens_of(self, item: dict[str, Any]) -> Tokens:
        """An input item's tokens: as recorded for conversation items, else computed."""
        recorded = self.tokens.get(item.get("id", ""))
        return recorded if recorded is not None else item_tokens(item)

    def as_heard(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items as the responder sees them: user audio carries what was recognised in it."""
        out = []
        for item in items:
            heard = self.heard.get(item.get("id", ""))
            if heard is not None:
                item = copy.deepcopy(item)
                for part in item.get("content") or []:
                    if part.get("type") == "input_audio" and not part.get("transcript"):
                        part["transcript"] = heard
            out.append(item)
        return out


def user_audio_item(item_id: str) -> dict[str, Any]:
    """The user message a committed input audio turn becomes (its transcript comes later)."""
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}],
    }


def user_audio_tokens_for(ms: float) -> Tokens:
    return Tokens(audio=user_audio_tokens(ms))
