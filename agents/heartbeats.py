"""Live sessions' heartbeats: one database call per interval for all of a process's sessions.

A session's heartbeat (``Session.heartbeat_at`` and its audio so far, every
``VP_SESSION_HEARTBEAT_SECONDS``) tells the sweep it is alive. One call per session costs a
thread hop and, with ``CONN_MAX_AGE = 0``, a new database connection each; with every session of
a process started together (a load test, a burst after a deploy) they also come all at once and
hold the GIL away from the relay's frames (measured: 5 % of the serving process's CPU at 50
sessions and the relay's p99 tail, issue 17). So a process beats for all its sessions together:
one ``database_sync_to_async`` call, one connection, one statement per tenant
(``services.sessions_heartbeat``).

While the journal sees the database down no beat is attempted (every ``database_sync_to_async``
call of a process shares one thread); after a missed beat the next comes within a second of the
database being back, so that no live session looks abandoned longer than it has to.

One ``Heartbeats`` per event loop and interval (the tests run an event loop per test); its task
runs while it has sessions and ends with the last.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable

from channels.db import database_sync_to_async

from agents import journal, services

logger = logging.getLogger(__name__)

AudioSource = Callable[[], tuple[int, int]]


class Heartbeats:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._sessions: dict[int, tuple[int, AudioSource]] = {}
        self._task: asyncio.Task | None = None

    def add(self, *, session_id: int, tenant_id: int, audio: AudioSource) -> None:
        self._sessions[session_id] = (tenant_id, audio)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"heartbeats-{self.interval:g}s"
            )

    def discard(self, session_id: int) -> None:
        self._sessions.pop(session_id, None)
        if not self._sessions and self._task is not None:
            self._task.cancel()
            self._task = None

    def __len__(self) -> int:
        return len(self._sessions)

    def beats(self) -> list[services.Heartbeat]:
        """What each live session reports now."""
        return [
            services.Heartbeat(session_id, tenant_id, *audio())
            for session_id, (tenant_id, audio) in self._sessions.items()
        ]

    async def _run(self) -> None:
        database = journal.get()
        missed = False
        while True:
            await asyncio.sleep(min(self.interval, 1.0) if missed else self.interval)
            if not database.database_available():
                missed = True
                continue  # the journal probes; a call now would only hold the shared thread
            beats = self.beats()  # never empty: the task ends with the last session
            try:
                await database_sync_to_async(services.sessions_heartbeat)(beats)
            except Exception as exc:
                missed = True
                if journal.is_unreachable(exc):
                    database.report_database_error()
                logger.warning("heartbeat of %d session(s) failed: %s", len(beats), exc)
            else:
                missed = False


_PER_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Heartbeats]] = (
    weakref.WeakKeyDictionary()
)


def for_interval(interval: float) -> Heartbeats:
    """This event loop's heartbeats every ``interval`` seconds."""
    per_interval = _PER_LOOP.setdefault(asyncio.get_running_loop(), {})
    if interval not in per_interval:
        per_interval[interval] = Heartbeats(interval)
    return per_interval[interval]
