"""What goes out to one client socket: a send budget in bytes, and closes that carry a reason.

ASGI gives an application no backpressure: Daphne and uvicorn both write every message into
their transport's buffer whether the client reads or not, so one client that stops reading grows
the process without bound. So this looks at the transport behind ``send``:

* Daphne: a push producer registered on the connection's Twisted transport (Twisted's own
  flow-control interface) hears when its buffer is full (paused) and drained (resumed); bytes
  sent while paused are what the client is behind by;
* uvicorn: the asyncio transport's ``get_write_buffer_size()`` is what it is behind by;
* any other server: a send that stalls for longer than ``stall_s`` is the same verdict.

Past the budget the client is a slow reader: the session ends (4010) and the upstream closes.

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


def _asyncio_transport(send: Any) -> Any | None:
    """The asyncio transport of a server whose ``send`` is a bound method of its protocol
    (uvicorn, both WebSocket implementations): its write buffer is what the client is behind."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if hasattr(transport, "get_write_buffer_size") else None


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
        send: Callable[[dict[str, Any]], Awaitable[None]],
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
        self._transport = _asyncio_transport(send)
        # The relay's frames skip the ASGI send (a coroutine, a message dictionary, the
        # server's checks) when the server's protocol can write them at once: Daphne's
        # (autobahn's sendMessage on an open socket), voiceplatform.serve's uvicorn protocol
        # (send_text_nowait). Otherwise, and whenever that says no, the ASGI send.
        self._send_now: Callable[[str], bool] | None = (
            self._daphne_send_now
            if self._protocol is not None
            else getattr(getattr(send, "__self__", None), "send_text_nowait", None)
        )

        self.paused = False
        self.behind_bytes = 0  # sent while the transport said its buffer was full
        self._sends = 0  # messages handed to the server so far
        self._sending = False  # a send is waiting for the server
        self._sends_seen = 0
        self._stalled_since: float | None = None
        self._watch: asyncio.TimerHandle | None = None
        self._verdict = False
        self._previous: Any = None

    def attach(self) -> None:
        """Start watching (after the socket is accepted)."""
        if self._protocol is not None:
            try:
                self._watch_transport(self._protocol.transport)
            except Exception:  # an unknown transport: fall back to the stall watch
                logger.warning("could not watch the client's output buffer", exc_info=True)
        self._watch = asyncio.get_running_loop().call_later(WATCH_INTERVAL_S, self._check_stall)

    def _watch_transport(self, transport: Any) -> None:
        """Become the transport's producer. The HTTP channel that accepted the upgrade is still
        registered there: it is told everything it was told before (it pauses reading the
        client while the output buffer is full)."""
        self._previous = getattr(transport, "producer", None)
        if self._previous is not None:
            transport.unregisterProducer()
        transport.registerProducer(self, True)

    def detach(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    # --- Twisted's IPushProducer: the transport's buffer filled up or drained ------------------

    def pauseProducing(self) -> None:  # noqa: N802 - Twisted's interface
        self.paused = True
        if self._previous is not None:
            self._previous.pauseProducing()

    def resumeProducing(self) -> None:  # noqa: N802
        self.paused = False
        self.behind_bytes = 0
        if self._previous is not None:
            self._previous.resumeProducing()

    def stopProducing(self) -> None:  # noqa: N802
        self.paused = False
        if self._previous is not None:
            self._previous.stopProducing()

    # --- sending ---------------------------------------------------------------------------

    async def send_text(self, text: str) -> None:
        if self._verdict:
            if not text.startswith('{"type":"error"'):
                return  # the session is ending: only its error event still goes out
        elif self._behind(len(text)) > self._budget:
            self._slow_reader()
            return
        self._sends += 1
        if self._send_now is not None and self._send_now(text):
            return
        self._sending = True
        await self._send({"type": "websocket.send", "text": text})
        self._sending = False

    def _daphne_send_now(self, text: str) -> bool:
        protocol = self._protocol
        if protocol is None or protocol.state != protocol.STATE_OPEN:
            return False
        protocol.sendMessage(text.encode(), False)
        return True

    def _behind(self, size: int) -> int:
        """Bytes the client is behind by, counting a message of ``size`` about to be sent."""
        if self.paused:
            self.behind_bytes += size
        elif self._transport is not None:
            self.behind_bytes = self._transport.get_write_buffer_size()
        return self.behind_bytes

    async def close(self, code: int, reason: str) -> None:
        reason = reason[:120]
        if self._protocol is not None and self._protocol.state == self._protocol.STATE_OPEN:
            self._protocol.sendClose(code=code, reason=reason)  # Daphne drops an ASGI reason
            return
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def _check_stall(self) -> None:
        """Once a second: is the same send still waiting as at the last look? (No clock is read
        per message: the audio path stays as cheap as it was.)"""
        now = self._clock()
        if self._sending and self._sends == self._sends_seen:
            if self._stalled_since is None:
                self._stalled_since = now - WATCH_INTERVAL_S
            if now - self._stalled_since > self._stall_s:
                self._slow_reader()
                return
        else:
            self._stalled_since = None
        self._sends_seen = self._sends
        self._watch = asyncio.get_running_loop().call_later(WATCH_INTERVAL_S, self._check_stall)

    def _slow_reader(self) -> None:
        if not self._verdict:
            self._verdict = True
            logger.warning("client stopped reading: %d bytes behind", self.behind_bytes)
            self._on_slow_reader()
