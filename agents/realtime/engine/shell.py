"""The I/O shell every local engine session shares: client events in, server events out, one
worker that handles client events in order, expiry and close.

A session subclass maps event types to handlers (``handlers``); a handler changes the session's
parts and calls :meth:`emit` with what they return. A :class:`ProtocolError` becomes an ``error``
event and the session goes on, as at OpenAI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

from ..frames import error_event
from ..protocol import ProtocolError, new_id

log = logging.getLogger("agents.realtime.engine")

Handler = Callable[[dict[str, Any]], Awaitable[None]]


def closed_error(code: int, reason: str) -> ConnectionClosed:
    frame = Close(code, reason)
    cls = ConnectionClosedOK if code in (1000, 1001) else ConnectionClosedError
    return cls(frame, frame, False)


def parse_client_event(message: str) -> dict[str, Any]:
    try:
        event = json.loads(message)
    except ValueError as exc:
        raise ProtocolError(
            "invalid_json", f"The server could not parse the JSON of your event: {exc}."
        ) from None
    if not isinstance(event, dict):
        raise ProtocolError("invalid_json", "Client events must be JSON objects.")
    return event


class EngineShell:
    """Queues, worker, timer and close; subclasses hold the protocol."""

    handlers: dict[str, str] = {}  # client event type -> method name

    def __init__(self, *, max_session_seconds: float, realtime_pacing: bool) -> None:
        self.max_session_seconds = max_session_seconds
        self.realtime_pacing = realtime_pacing
        self.session_id = new_id("sess")
        self.expires_at = int(time.time() + max_session_seconds)
        self.config: dict[str, Any] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self._closed = False
        self._in: asyncio.Queue[str | None] = asyncio.Queue()
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Emit ``session.created`` and start processing; call once, inside a running loop."""
        self.emit({"type": "session.created", "session": self.config})
        self._worker = asyncio.create_task(self._run(), name=f"local-engine-{self.session_id}")
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.max_session_seconds, self._expire)

    @property
    def closed(self) -> bool:
        return self._closed

    async def receive(self, message: str | bytes) -> None:
        """Queue one client event (never blocks on engine work)."""
        if self._closed:
            raise closed_error(self.close_code or 1006, self.close_reason)
        if isinstance(message, bytes | bytearray | memoryview):
            message = bytes(message).decode("utf-8", "replace")
        self._in.put_nowait(message)

    async def next_event(self) -> str:
        """Next server event; raises ``ConnectionClosed`` once closed and drained."""
        if self._closed and self._out.empty():
            raise closed_error(self.close_code or 1006, self.close_reason)
        message = await self._out.get()
        if message is None:
            self._out.put_nowait(None)  # keep later callers failing too
            raise closed_error(self.close_code or 1006, self.close_reason)
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
        for task in [self._worker, *self.background_tasks()]:
            if task is not None and task is not current and not task.done():
                task.cancel()

    def background_tasks(self) -> list[asyncio.Task[None] | None]:
        """Tasks of the session besides its worker, cancelled on close."""
        return []

    def _expire(self) -> None:
        minutes = self.max_session_seconds / 60
        span = f"{minutes:g} minutes" if minutes >= 1 else f"{self.max_session_seconds:g} seconds"
        self.emit(
            error_event("session_expired", f"Your session hit the maximum duration of {span}.")
        )
        asyncio.ensure_future(self.close(1001, "session expired"))

    # --- events -------------------------------------------------------------------------

    def emit(self, *events: dict[str, Any]) -> None:
        if self._closed:
            return
        for event in events:
            event = {**event, "event_id": new_id("event")}  # the engine's own ids, always
            self._out.put_nowait(json.dumps(event, separators=(",", ":")))

    async def _run(self) -> None:
        while True:
            message = await self._in.get()
            if message is None or self._closed:
                return
            client_event_id = None
            try:
                event = parse_client_event(message)
                if isinstance(event.get("event_id"), str):
                    client_event_id = event["event_id"]
                await self._dispatch(event)
            except ProtocolError as exc:
                self.emit(
                    error_event(
                        exc.code,
                        exc.message,
                        event_id=client_event_id,
                        param=exc.param,
                        error_type=exc.type,
                    )
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the session alive, like the real API
                log.exception("local engine: error handling a client event")
                self.emit(
                    error_event(
                        "server_error",
                        f"Internal error: {exc}",
                        event_id=client_event_id,
                        error_type="server_error",
                    )
                )

    async def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if not isinstance(kind, str):
            raise ProtocolError(
                "missing_required_parameter", "Missing required parameter: 'type'.", param="type"
            )
        name = self.handlers.get(kind)
        if name is None:
            supported = ", ".join(f"'{t}'" for t in self.handlers)
            raise ProtocolError(
                "invalid_value",
                f"Invalid value: '{kind}'. Supported values are: {supported}.",
                param="type",
            )
        await getattr(self, name)(event)
