"""Scripted stand-ins for the two ends of a bridge: a client sink and an upstream."""

from __future__ import annotations

import asyncio
import json

from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close


class FakeClient:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None
        self.arrived = asyncio.Event()

    async def send_text(self, text: str) -> None:
        self.sent.append(text)
        self.arrived.set()

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.arrived.set()

    def events(self) -> list[dict]:
        return [json.loads(text) for text in self.sent]

    def errors(self) -> list[str]:
        return [event["error"]["code"] for event in self.events() if event["type"] == "error"]


class FakeUpstream:
    """Records what it receives; ``push`` queues server events; ``drop`` breaks the link."""

    def __init__(self, session_id: str = "sess_fake_1") -> None:
        self.received: list[str] = []
        self.closed = False
        self.session_id = session_id
        self.answer_updates = True
        self._events: asyncio.Queue = asyncio.Queue()
        self.push({"type": "session.created", "session": {"id": session_id, "type": "realtime"}})

    def push(self, event: dict | str) -> None:
        self._events.put_nowait(event if isinstance(event, str) else json.dumps(event))

    def drop(self, code: int = 1006, reason: str = "") -> None:
        self._events.put_nowait((code, reason))

    async def send(self, message: str) -> None:
        if self.closed:
            raise ConnectionClosedOK(Close(1000, ""), Close(1000, ""))
        self.received.append(message)
        event = json.loads(message)
        if event.get("type") == "session.update" and self.answer_updates:
            # As a real server: the configured session comes back in session.updated.
            session = {"id": self.session_id, **event["session"]}
            self.push({"type": "session.updated", "session": session})

    async def recv(self) -> str:
        item = await self._events.get()
        if isinstance(item, tuple):
            code, reason = item
            self.closed = True
            if code in (1000, 1001):
                raise ConnectionClosedOK(Close(code, reason), None)
            raise ConnectionClosedError(Close(code, reason) if code != 1006 else None, None)
        return item

    async def close(self) -> None:
        self.closed = True

    def received_types(self) -> list[str]:
        return [json.loads(message)["type"] for message in self.received]
