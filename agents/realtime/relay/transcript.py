"""Conversation items turned into transcript records, each at its place in the conversation."""

from __future__ import annotations

from typing import Any

from agents.realtime.relay.calls import PLATFORM_OUTPUT_PREFIX
from agents.realtime.relay.contracts import TranscriptRecord


class Transcript:
    def __init__(self, *, target_language: str = "") -> None:
        self._sequence: dict[str, int] = {}
        self._translation = ["", ""]  # source and translated text of the current utterance
        self._translations = 0
        self.target_language = target_language

    def place(self, item_id: Any) -> int:
        """The item's place in the conversation (assigned the first time it is seen)."""
        if not isinstance(item_id, str) or not item_id:
            return len(self._sequence)
        sequence = self._sequence.get(item_id)
        if sequence is None:
            sequence = self._sequence[item_id] = len(self._sequence)
        return sequence

    def record(
        self,
        *,
        item_id: str | None,
        role: str,
        kind: str,
        text: str = "",
        data: dict[str, Any] | None = None,
    ) -> TranscriptRecord:
        return TranscriptRecord(
            item_id=item_id,
            sequence=self.place(item_id),
            role=role,
            kind=kind,
            text=text,
            data=data or {},
        )

    def on_item_added(self, item: dict[str, Any]) -> TranscriptRecord | None:
        """A conversation item appeared: text and image messages and client outputs complete
        here; audio messages complete when their transcript does."""
        item_id = item.get("id")
        self.place(item_id)
        item_type = item.get("type")
        if item_type == "message" and item.get("role") in ("user", "system"):
            texts, images = [], 0
            for part in item.get("content") or []:
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "input_text":
                    texts.append(str(part.get("text") or ""))
                elif part.get("type") == "input_image":
                    images += 1
            if texts or images:
                return self.record(
                    item_id=item_id,
                    role=str(item["role"]),
                    kind="message",
                    text=" ".join(texts),
                    data={"images": images} if images else {},
                )
        elif item_type == "function_call_output" and not str(item_id).startswith(
            PLATFORM_OUTPUT_PREFIX
        ):
            return self.record(
                item_id=item_id,
                role="tool",
                kind="function_call_output",
                text=str(item.get("output") or ""),
                data={"call_id": item.get("call_id")},
            )
        return None

    def on_user_transcript(self, event: dict[str, Any]) -> TranscriptRecord | None:
        if not str(event.get("transcript") or "").strip():
            return None  # nothing was recognised (a noise the turn detector took for speech)
        return self.record(
            item_id=event.get("item_id"),
            role="user",
            kind="message",
            text=str(event.get("transcript") or ""),
        )

    def on_output_item(self, item: dict[str, Any]) -> TranscriptRecord | None:
        item_id = item.get("id")
        item_type = item.get("type")
        if item_type == "message":
            texts = [
                part.get("transcript") or part.get("text") or ""
                for part in item.get("content") or []
                if isinstance(part, dict)
            ]
            if not any(str(text).strip() for text in texts):
                return None  # cut off before a word was said: nothing reached the user
            return self.record(
                item_id=item_id,
                role="assistant",
                kind="message",
                text=" ".join(str(text) for text in texts if text),
                data={"status": item.get("status")},
            )
        if item_type == "function_call":
            return self.record(
                item_id=item_id,
                role="assistant",
                kind="function_call",
                text=str(item.get("name") or ""),
                data={
                    "name": item.get("name"),
                    "call_id": item.get("call_id"),
                    "arguments": item.get("arguments"),
                },
            )
        if item_type in ("mcp_call", "mcp_list_tools"):
            return self.record(
                item_id=item_id,
                role="tool",
                kind=item_type,
                text=str(item.get("name") or item.get("server_label") or ""),
                data={
                    key: item.get(key)
                    for key in ("server_label", "name", "arguments", "output", "error", "tools")
                    if item.get(key) is not None
                },
            )
        return None

    # Translation sessions stream source and target text; a pair is stored per utterance.

    def on_source_delta(self, delta: Any, *, segment: int) -> TranscriptRecord | None:
        flushed = self.flush_translation(segment=segment) if self._translation[1] else None
        self._translation[0] += str(delta or "")
        return flushed

    def on_target_delta(self, delta: Any) -> None:
        self._translation[1] += str(delta or "")

    def flush_translation(self, *, segment: int) -> TranscriptRecord | None:
        source, target = (part.strip() for part in self._translation)
        self._translation = ["", ""]
        if not (source or target):
            return None
        item_id = f"translation_{segment}_{self._translations}"
        self._translations += 1
        return self.record(
            item_id=item_id,
            role="assistant",
            kind="translation",
            text=target,
            data={"source": source, "language": self.target_language},
        )
