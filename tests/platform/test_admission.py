"""Admission across real processes: two server processes on one database.

* 8 sessions opened at once against a limit of 5, spread over both processes: exactly 5 are
  admitted, burst after burst (the database is the arbiter: a row lock on PostgreSQL, the
  IMMEDIATE transaction's write lock on SQLite).
* kill -9 of a process with live sessions: they stop counting once their heartbeat is
  ``VP_SESSION_STALE_SECONDS`` old, and the sweep ends them at that last heartbeat.

Each runs on the embedded SQLite file (the two processes share the data directory) and, when
the run has ``DATABASE_URL`` (CI's second pass), on a PostgreSQL database of this module's own.
The service-level twins are in tests/agents/test_admission.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import websockets

from tests.servers import Platform, ServerProcess, api_connect, base_environ, manage
from tests.services import OwnDatabase, needs_postgresql, timestamp
from tests.upstreams import ScriptedUpstream, scripted_agent_create
from tests.waiting import until

LIMIT = 5
BURST = 8
BURSTS = 20
HEARTBEAT_S = 1.0
STALE_S = 4.0

DATABASES = ["sqlite", pytest.param("postgresql", marks=needs_postgresql)]


def open_sessions(database: OwnDatabase) -> int:
    return database.rows("SELECT count(*) FROM agents_session WHERE ended_at IS NULL")[0][0]


def set_limit(database: OwnDatabase, limit: int) -> None:
    database.execute(f"UPDATE tenants_tenant SET max_concurrent_sessions = {limit} "
                     "WHERE slug = 'demo'")  # fmt: skip


class Cluster:
    """The seeded platform served by two server processes that share one database.

    Its agent talks to a scripted upstream in this process: a session costs the servers only
    the relay (the bundled engine's speech models would load the processes with work that has
    nothing to do with admission, and a loaded host then misses Daphne's 5 s handshake).
    """

    def __init__(self, kind: str, tmp_path: Path, **settings: str) -> None:
        self.database = OwnDatabase(kind, tmp_path, "admission")
        self.upstream = ScriptedUpstream()
        environ = base_environ(
            tmp_path, **self.database.environ, **self.upstream.environ, **settings
        )
        self.first: Platform | None = None
        self.second: ServerProcess | None = None
        try:
            self.first = Platform(environ, tmp_path)
            created = scripted_agent_create(self.first)
            self.second = ServerProcess(environ, tmp_path / "daphne-2.log")
        except BaseException:
            self.stop()
            raise
        self.ports = [self.first.port, self.second.port]
        self.api_key = created["api_key"]

    def stop(self) -> None:
        for server in (self.second, self.first):
            if server is not None:
                server.stop()
        self.upstream.stop()
        self.database.drop()


async def open_session(port: int, api_key: str) -> tuple[str, websockets.ClientConnection | None]:
    """Open an API session: ("admitted", its socket) or (the refusal's code, None)."""
    connection = await api_connect(f"ws://127.0.0.1:{port}", api_key, open_timeout=20)
    first = json.loads(await asyncio.wait_for(connection.recv(), timeout=20))
    if first["type"] == "session.created":
        return "admitted", connection
    await connection.close()
    return first["error"]["code"], None


@pytest.fixture(scope="module", params=DATABASES)
def cluster(request, tmp_path_factory):
    cluster = Cluster(request.param, tmp_path_factory.mktemp(f"admission-{request.param}"))
    yield cluster
    cluster.stop()


def test_eight_at_once_against_a_limit_of_five_admits_exactly_five(cluster):
    set_limit(cluster.database, LIMIT)

    async def bursts() -> list[list[str]]:
        outcomes = []
        for _ in range(BURSTS):
            opened = await asyncio.gather(
                *(open_session(cluster.ports[i % 2], cluster.api_key) for i in range(BURST))
            )
            outcomes.append(sorted(outcome for outcome, _ in opened))
            for _, connection in opened:
                if connection is not None:
                    await connection.close()
            await until(lambda: open_sessions(cluster.database) == 0, "the burst's ends")
        return outcomes

    outcomes = asyncio.run(bursts())
    expected = ["admitted"] * LIMIT + ["too_many_sessions"] * (BURST - LIMIT)
    assert outcomes == [expected] * BURSTS


@pytest.mark.parametrize("kind", DATABASES)
def test_sessions_of_a_killed_process_stop_counting_and_end_at_their_last_heartbeat(kind, tmp_path):
    cluster = Cluster(
        kind, tmp_path,
        VP_SESSION_HEARTBEAT_SECONDS=str(HEARTBEAT_S), VP_SESSION_STALE_SECONDS=str(STALE_S),
    )  # fmt: skip
    try:
        killed_process_sessions(cluster)
    finally:
        cluster.stop()


def killed_process_sessions(cluster: Cluster) -> None:
    database = cluster.database
    set_limit(database, 3)
    assert cluster.second is not None and cluster.first is not None
    doomed, survivor = cluster.second.port, cluster.first.port

    async def scenario() -> tuple[list[int], float, float, list[str]]:
        victims = [await open_session(doomed, cluster.api_key) for _ in range(3)]
        assert [outcome for outcome, _ in victims] == ["admitted"] * 3
        assert (await open_session(survivor, cluster.api_key))[0] == "too_many_sessions"
        # Every session has written a heartbeat since it started: the dead ones must end at
        # that heartbeat, not when they started nor when they are swept.
        await until(
            lambda: database.rows(
                "SELECT count(*) FROM agents_session WHERE ended_at IS NULL "
                "AND heartbeat_at > started_at"
            )[0][0] == 3,
            "a heartbeat of each session", timeout=3 * HEARTBEAT_S + 5,
        )  # fmt: skip
        victims_ids = [pk for (pk,) in database.rows(
            "SELECT id FROM agents_session WHERE ended_at IS NULL")]  # fmt: skip
        killed_at = time.time()
        os.kill(cluster.second.process.pid, signal.SIGKILL)
        admitted: list[str] = []

        async def admits() -> bool:
            outcome, connection = await open_session(survivor, cluster.api_key)
            if connection is not None:
                admitted.append(outcome)
                survivors.append(connection)
            return outcome == "admitted"

        survivors: list[websockets.ClientConnection] = []
        deadline = time.monotonic() + STALE_S + HEARTBEAT_S + 5
        while not await admits():
            assert time.monotonic() < deadline, "the dead sessions still count"
            await asyncio.sleep(0.1)
        admitted_after = time.time() - killed_at
        for connection in survivors:
            await connection.close()
        return victims_ids, killed_at, admitted_after, admitted

    victims_ids, killed_at, admitted_after, admitted = asyncio.run(scenario())
    assert len(victims_ids) == 3
    assert admitted == ["admitted"]
    # Silent for STALE_S since their last heartbeat (at most one interval before the kill).
    assert admitted_after <= STALE_S + HEARTBEAT_S + 2
    victims = ", ".join(str(pk) for pk in victims_ids)
    heartbeats = {
        pk: timestamp(heartbeat)
        for pk, heartbeat in database.rows(
            "SELECT id, heartbeat_at FROM agents_session "
            f"WHERE ended_at IS NULL AND id IN ({victims})"
        )
    }
    assert len(heartbeats) == 3  # not ended yet: their process died without recording it
    swept = manage(
        cluster.first.environ, "shell", "-c",
        "from agents.services import sessions_sweep_abandoned; print(sessions_sweep_abandoned())",
    )  # fmt: skip
    assert swept.strip().splitlines()[-1] == "3"
    ended = {
        pk: (timestamp(ended_at), reason)
        for pk, ended_at, reason in database.rows(
            f"SELECT id, ended_at, end_reason FROM agents_session WHERE id IN ({victims})"
        )
    }
    assert ended == {pk: (heartbeat, "abandoned") for pk, heartbeat in heartbeats.items()}
    killed = datetime.fromtimestamp(killed_at, UTC)
    for heartbeat in heartbeats.values():
        # The last sign of life: just before the kill (within one heartbeat interval).
        assert killed - timedelta(seconds=HEARTBEAT_S + 1) <= heartbeat <= killed
