"""Graceful drain: what a server process does between SIGTERM and its exit.

On SIGTERM the process

1. stops admitting: ``draining()`` turns true (the readiness endpoint answers 503 with it, so
   the load balancer sends new sockets elsewhere) and a socket that still arrives here is
   refused with the ``server_restarting`` error event and close 4012;
2. lets every live session finish the answer it is giving (so the user hears it and its
   ``response.done`` is billed), then ends it with the same error event and close 4012
   "server_restarting"; an idle session ends at once. Clients reconnect elsewhere on it;
3. gives that ``settings.VP_DRAIN_SECONDS`` at most: at the deadline, sessions still answering
   are ended all the same. Every session's recorder is closed (flushed) before it counts as
   ended;
4. hands the signal to the handler the server installed (Daphne's Twisted reactor stops and
   cancels what is left, uvicorn shuts down), so the process exits as it always did.

A second SIGTERM during the drain skips the wait. The server installs its own SIGTERM handler
when it starts serving (Twisted in ``reactor.run``, uvicorn in ``capture_signals``), after the
application is imported, so ``install_signal_handler`` runs at the first ASGI call, in the main
thread, and chains the handler it replaces: this works the same under either server. Where no
server installed one (the application called inside a test), SIGTERM keeps its default.

Close 4012 rather than 1012: Daphne's WebSocket layer (autobahn) sends only 1000 and
3000-4999, so the close table gives each standard code a 4000-range twin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from django.conf import settings

from agents import journal
from tenants.metrics import DRAINING

logger = logging.getLogger(__name__)

DRAIN_CODE = "server_restarting"


class Drainable(Protocol):
    async def drain(self, deadline: float) -> None:
        """End the session once its answer in flight is done, at ``deadline`` (loop time) at
        the latest; return when its usage and end are recorded."""


class _State:
    def __init__(self) -> None:
        self.draining = False
        self.deadline = 0.0
        self.sessions: set[Drainable] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.installed = False
        self.previous: Any = None
        self.done: asyncio.Event | None = None
        self.chained = False


_state = _State()


def draining() -> bool:
    """True from SIGTERM on: this process admits no new session (readiness must fail)."""
    return _state.draining


def session_opened(session: Drainable) -> None:
    """A session this process holds; one that opens during a drain is drained at once."""
    _state.sessions.add(session)
    if _state.draining:
        _drain_one(session)


def session_closed(session: Drainable) -> None:
    _state.sessions.discard(session)
    if _state.draining and not _state.sessions and _state.done is not None:
        _state.done.set()


def live_sessions() -> int:
    return len(_state.sessions)


def install_signal_handler() -> None:
    """Take over SIGTERM (once, from the main thread), chaining the server's own handler."""
    if _state.installed or threading.current_thread() is not threading.main_thread():
        return
    _state.installed = True
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        # No server took SIGTERM (the application runs inside a test, say): nothing to chain.
        return
    _state.previous = previous
    loop = asyncio.get_running_loop()

    def on_sigterm(number: int, frame: FrameType | None) -> None:
        if _state.draining or loop.is_closed():  # a second SIGTERM: stop waiting
            _chain(number, frame)
            return
        loop.call_soon_threadsafe(_start, number, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def _start(number: int, frame: FrameType | None) -> None:
    task = asyncio.get_running_loop().create_task(drain(settings.VP_DRAIN_SECONDS))
    _state.tasks.add(task)

    def finished(done: asyncio.Task[None]) -> None:
        _state.tasks.discard(done)
        if not done.cancelled() and done.exception() is not None:
            logger.error("the drain failed", exc_info=done.exception())
        _chain(number, frame)

    task.add_done_callback(finished)


async def drain(seconds: float) -> None:
    """Stop admitting, end every session as described above, return when all are recorded
    (or ``seconds`` plus a short grace for the last recorders have passed)."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    _state.draining = True
    _state.deadline = loop.time() + seconds
    _state.done = asyncio.Event()
    DRAINING.set(1)
    logger.warning("draining: %d live sessions, up to %.0f s", len(_state.sessions), seconds)
    for session in list(_state.sessions):
        _drain_one(session)
    if _state.sessions:
        # The deadline ends the sessions; the grace lets their recorders flush.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds + 10.0):
                await _state.done.wait()
    # What the sessions recorded is on disk; hand it to the database before the process goes
    # (what does not make it stays in the journal, and the next process replays it).
    remaining = max(1.0, seconds + 10.0 - (time.monotonic() - started))
    flushed = await journal.flush_async(remaining)
    logger.warning(
        "drained in %.1f s (%d sessions left, usage journal %s)",
        time.monotonic() - started,
        len(_state.sessions),
        "flushed" if flushed else "left for the next process",
    )


def _drain_one(session: Drainable) -> None:
    task = asyncio.get_running_loop().create_task(session.drain(_state.deadline))
    _state.tasks.add(task)
    task.add_done_callback(_state.tasks.discard)


def _chain(number: int, frame: FrameType | None) -> None:
    """Hand the signal to whoever had it before us (the server's own shutdown)."""
    if _state.chained:
        return
    _state.chained = True
    previous: Callable[[int, FrameType | None], Any] | int | None = _state.previous
    if callable(previous):
        previous(number, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # the default action: die of SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
