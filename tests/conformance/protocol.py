"""What the conformance tests check every server event against, and a recorder around a
client's connection that validates each event as it arrives.

The reference is the official ``openai`` SDK's typed models: every event a realtime socket sends
must validate against ``openai.types.realtime.RealtimeServerEvent`` (a translation socket:
``RealtimeTranslationServerEvent``), strictly, not through the SDK's lenient ``construct``.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from openai.types.realtime import RealtimeServerEvent, RealtimeTranslationServerEvent
from pydantic import TypeAdapter

SERVER_EVENT = TypeAdapter(RealtimeServerEvent)
TRANSLATION_EVENT = TypeAdapter(RealtimeTranslationServerEvent)
# No single event of a local-engine turn takes this long; a whole turn stays well under it.
TURN_TIMEOUT = 20.0
ITEM_EVENTS = ("conversation.item.added", "conversation.item.done", "conversation.item.created")


def validate(raw: str | bytes, adapter: TypeAdapter = SERVER_EVENT) -> dict[str, Any]:
    """Parse one server event and validate it against the SDK's union (raises on mismatch)."""
    event = json.loads(raw)
    model = adapter.validate_python(event)
    assert model.type == event["type"], (model.type, event)
    return event


class UnexpectedError(AssertionError):
    """An ``error`` event arrived where the protocol expects none."""


class Recorder:
    """Receives, validates and keeps every server event of one connection.

    ``receive`` is any coroutine function returning the next raw frame (the SDK connection's
    ``recv_bytes``, a websockets ``recv``). An ``error`` event fails the wait at once (with the
    event in the message) unless the caller allows it, so a failing test fails fast and says why.
    """

    def __init__(
        self, receive: Callable[[], Awaitable[str | bytes]], adapter: TypeAdapter = SERVER_EVENT
    ) -> None:
        self._receive = receive
        self.adapter = adapter
        self.events: list[dict[str, Any]] = []

    async def next(self, timeout: float = TURN_TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self._receive(), timeout)
        event = validate(raw, self.adapter)
        self.events.append(event)
        return event

    async def until(
        self,
        done: str | Callable[[dict[str, Any]], bool],
        *,
        timeout: float = TURN_TIMEOUT,
        allow_errors: bool = False,
    ) -> list[dict[str, Any]]:
        """Events up to and including the first that is ``done`` (a type or a predicate)."""
        matches = (lambda e: e["type"] == done) if isinstance(done, str) else done
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                out.append(event)
                if matches(event):
                    return out
                if event["type"] == "error" and not allow_errors:
                    raise UnexpectedError(
                        f"error event while waiting for {done!r}: {json.dumps(event)}\n"
                        f"events so far: {types(out)}"
                    )

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "error"]

    def of_type(self, *event_types: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] in event_types]


def types(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def user_text(text: str, item_id: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }
    if item_id:
        item["id"] = item_id
    return item


def chunks_b64(pcm: bytes, chunk_bytes: int) -> list[str]:
    return [
        base64.b64encode(pcm[i : i + chunk_bytes]).decode() for i in range(0, len(pcm), chunk_bytes)
    ]


def joined(events: Iterable[dict[str, Any]], event_type: str, key: str = "delta") -> str:
    return "".join(e[key] for e in events if e["type"] == event_type)
