"""What goes out to one client socket: a send budget in bytes, and closes that carry a reason.

ASGI gives an application no backpressure: Daphne writes every message into Twisted's buffer
whether the client reads or not, so one client that stops reading grows the process without
bound. Where the server is Daphne, this registers a push producer on the connection's transport
(Twisted's own flow-control interface): the transport says when its buffer is full (paused) and
when it has drained (resumed). Bytes sent while paused are what the client is behind by; past
the budget the client is a slow reader and the session ends. Servers whose ``send`` waits for
the socket instead (uvicorn) hold at most one message per connection; there a send stalled for
longer than ``stall_s`` is the same verdict.

Daphne also drops the reason of an ASGI close; with the protocol at hand, the close goes out
with its reason, as on other servers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0


def _daphne_protocol(send: Any) -> Any | None:
    """Daphne's WebSocket protocol behind an ASGI ``send`` (``partial(handle_reply, proto)``)."""
    arguments = getattr(send, "args", ())
    protocol = arguments[0] if arguments else None
    if hasattr(protocol, "registerProducer") and hasattr(protocol, "sendClose"):
        return protocol
    return None


class ClientOutput:
    def __init__(
        self,
        send: Callable[[dict], Awaitable[None]],
        *,
        budget_bytes: int,
        stall_s: float,
        on_slow_reader: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._budget = budget_bytes
        self._stall_s = stall_s
        self._on_slow_reader = on_slow_reader
        self._clock = clock
        self._protocol = _daphne_protocol(send)
        self.paused = False
        self.behind_bytes = 0  # sent while the transport said its buffer was full
        self._send_started: float | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._verdict = False

    def attach(self) -> None:
        """Start watching (after the socket is accepted)."""
        if self._protocol is not None:
            try:
                self._protocol.registerProducer(self, True)
            except Exception:  # another producer: fall back to the stall watch
                logger.warning("could not watch the client's output buffer", exc_info=True)
        self._watch = asyncio.get_running_loop().call_later(WATCH_INTERVAL_S, self._check_stall)

    def detach(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    # --- Twisted's IPushProducer: the transport's buffer filled up or drained ------------------

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self.paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self.behind_bytes = 0

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = False

    # --- sending ---------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        if self._verdict and not text.startswith('{"type":"error"'):
            return  # the session is ending: only its error event still goes out
        if self.paused:
            self.behind_bytes += len(text)
            if self.behind_bytes > self._budget:
                self._slow_reader()
                return
        self._send_started = self._clock()
        await self._send({"type": "websocket.send", "text": text})
        self._send_started = None

    async def close(self, code: int, reason: str) -> None:
        reason = reason[:120]
        if self._protocol is not None and self._protocol.state == self._protocol.STATE_OPEN:
            self._protocol.sendClose(code=code, reason=reason)  # Daphne drops an ASGI reason
            return
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def _check_stall(self) -> None:
        started = self._send_started
        if started is not None and self._clock() - started > self._stall_s:
            self._slow_reader()
            return
        self._watch = asyncio.get_running_loop().call_later(WATCH_INTERVAL_S, self._check_stall)

    def _slow_reader(self) -> None:
        if not self._verdict:
            self._verdict = True
            logger.warning("client stopped reading: %d bytes behind", self.behind_bytes)
            self._on_slow_reader()
