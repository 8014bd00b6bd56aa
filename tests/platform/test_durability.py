"""Usage is never lost: a real Daphne process, a database that goes away, a process killed.

The upstream is an OpenAI stand-in run by the test (the agent's provider is "openai" and
``VP_OPENAI_REALTIME_URL`` points here) that answers every ``response.create`` with a
``response.done`` carrying usage of its own invention, different for each response and
remembered: at the end the ledger (``billing_usageevent``) must equal what it sent, token for
token, each response once.

* PostgreSQL away for 60 s under 10 live sessions (the database is this test's own; its
  connections are refused with ``ALLOW_CONNECTIONS false`` and its backends terminated, the
  shared server keeps running): nothing lost, every session ended, at its real end time.
* ``kill -9`` of a Daphne process holding records the database does not have yet (PostgreSQL
  refusing connections, or SQLite locked by the test): the restarted process replays its
  journal; nothing lost, nothing doubled. Runs in both CI passes (SQLite, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.parse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import websockets

from agents.journal import journal_files, read_entries
from tests.run_isolation import RUN_ID
from tests.servers import ROOT, Platform, base_environ, free_port, server_command, stop_process
from tests.waiting import until, until_sync

OUTAGE_S = 60.0
SESSIONS = 10
TOKEN_FIELDS = ("input_text_tokens", "input_audio_tokens", "cached_text_tokens",
                "cached_audio_tokens", "output_text_tokens", "output_audio_tokens")  # fmt: skip

needs_postgresql = pytest.mark.skipif(
    not os.environ.get("DATABASE_URL"), reason="a PostgreSQL outage needs DATABASE_URL"
)


class UsageUpstream:
    """An OpenAI Realtime stand-in in its own thread; ``sent`` is its side of the ledger."""

    def __init__(self) -> None:
        self.sent: dict[str, dict] = {}
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)

            async def main() -> None:
                self.server = await websockets.serve(self._handler, "127.0.0.1", 0)
                self.port = self.server.sockets[0].getsockname()[1]
                ready.set()
                await self.server.serve_forever()

            with contextlib.suppress(asyncio.CancelledError):
                self.loop.run_until_complete(main())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _usage(self) -> dict:
        """Usage no other response has: every count differs from every other response's."""
        k = len(self.sent) + 1
        return {
            "total_tokens": 1000 * k, "input_tokens": 31 * k, "output_tokens": 47 * k,
            "input_token_details": {
                "text_tokens": 11 * k, "audio_tokens": 20 * k, "cached_tokens": 5 * k,
                "cached_tokens_details": {"text_tokens": 2 * k, "audio_tokens": 3 * k}},
            "output_token_details": {"text_tokens": 13 * k, "audio_tokens": 34 * k},
        }  # fmt: skip

    async def _handler(self, connection) -> None:
        self.connections += 1
        name = f"sess_up_{self.connections}"
        session = {"id": name, "object": "realtime.session", "type": "realtime",
                   "model": "gpt-realtime-2"}  # fmt: skip
        await connection.send(json.dumps({"type": "session.created", "session": session}))
        number = 0
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in connection:
                event = json.loads(message)
                if event.get("type") == "session.update":
                    updated = {**event["session"], **session}
                    await connection.send(
                        json.dumps({"type": "session.updated", "session": updated})
                    )
                elif event.get("type") == "response.create":
                    number += 1
                    response_id = f"resp_{name}_{number}"
                    usage = self._usage()
                    self.sent[response_id] = usage
                    response = {"id": response_id, "object": "realtime.response",
                                "status": "in_progress", "output": []}  # fmt: skip
                    await connection.send(
                        json.dumps({"type": "response.created", "response": response})
                    )
                    done = {**response, "status": "completed", "usage": usage}
                    await connection.send(json.dumps({"type": "response.done", "response": done}))

    def ledger(self) -> dict[str, tuple[int, ...]]:
        """What was sent, in the ledger's columns (TOKEN_FIELDS)."""
        rows = {}
        for response_id, usage in self.sent.items():
            details, output = usage["input_token_details"], usage["output_token_details"]
            cached = details["cached_tokens_details"]
            rows[response_id] = (
                details["text_tokens"], details["audio_tokens"], cached["text_tokens"],
                cached["audio_tokens"], output["text_tokens"], output["audio_tokens"],
            )  # fmt: skip
        return rows

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(5)


SETUP = r"""
import json
from agents.configuration import agent_create
from tenants import services
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

with scopes_disabled():
    tenant = Tenant.objects.get(slug="demo")
    tenant.max_concurrent_sessions = 100
    tenant.save(update_fields=["max_concurrent_sessions"])
with tenant_scope(tenant):
    agent = agent_create(tenant=tenant, actor=None, fields={
        "name": "Durable", "kind": "voice_agent", "provider": "openai",
        "model": "gpt-realtime-2", "voice": "marin", "turn_detection": "none"})
    _, raw_key = services.api_key_issue(tenant=tenant, name="durability", default_agent=agent)
print(json.dumps({"api_key": raw_key}))
"""


class Database:
    """The platform's database as the test reaches it directly, and makes go away."""

    def __init__(self, kind: str, data_dir: Path) -> None:
        self.kind = kind
        self.environ: dict[str, str] = {}
        self._lock: sqlite3.Connection | None = None
        self._reader = None
        if kind == "sqlite":
            self.path = data_dir / "voiceplatform.sqlite3"
            return
        import psycopg

        server = urllib.parse.urlsplit(os.environ["DATABASE_URL"])
        self.name = f"vp_durability_{RUN_ID}_{free_port()}"
        self.admin_url = urllib.parse.urlunsplit(server._replace(path="/postgres"))
        self.url = urllib.parse.urlunsplit(server._replace(path=f"/{self.name}"))
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {self.name}")
        self.environ = {"DATABASE_URL": self.url}

    def rows(self, query: str) -> list[tuple]:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.path, timeout=20)) as connection:
                return connection.execute(query).fetchall()
        import psycopg

        # One connection for the test's polling (cut by go_away, then opened again).
        for attempt in range(2):
            try:
                if self._reader is None or self._reader.closed:
                    self._reader = psycopg.connect(self.url, autocommit=True)
                return self._reader.execute(query).fetchall()
            except psycopg.OperationalError:
                self._reader = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def ledger(self) -> dict[str, tuple[int, ...]]:
        rows = self.rows(
            f"SELECT upstream_response_id, {', '.join(TOKEN_FIELDS)} FROM billing_usageevent"
        )
        ledger = {row[0]: tuple(row[1:]) for row in rows}
        assert len(ledger) == len(rows), "a response counted twice"
        return ledger

    def sessions(self) -> dict[int, tuple]:
        rows = self.rows("SELECT id, ended_at, end_reason FROM agents_session")
        return {pk: (_timestamp(ended_at), reason) for pk, ended_at, reason in rows}

    def go_away(self) -> None:
        """No new connection succeeds and every open one is cut, as when the server stops."""
        if self.kind == "sqlite":
            # The platform's writes wait on the lock (busy timeout), then fail: never stored.
            self._lock = sqlite3.connect(self.path, timeout=20, isolation_level=None)
            self._lock.execute("BEGIN EXCLUSIVE")
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS false")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.name,),
            )

            def backends() -> int:
                query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                return admin.execute(query, (self.name,)).fetchone()[0]

            # A terminated backend takes a moment to exit; until then its session still works.
            until_sync(lambda: backends() == 0, "the database's connections gone")

    def come_back(self) -> None:
        if self.kind == "sqlite":
            if self._lock is not None:
                self._lock.execute("ROLLBACK")
                self._lock.close()
                self._lock = None
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS true")

    def drop(self) -> None:
        self.come_back()
        if self._reader is not None:
            self._reader.close()
        if self.kind == "sqlite":
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


def _timestamp(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class DurablePlatform:
    """The demo platform in one Daphne process, on ``database``, with the usage upstream."""

    def __init__(self, tmp_path: Path, database: Database) -> None:
        self.database = database
        self.upstream = UsageUpstream()
        self.journal_dir = tmp_path / "journal"
        self.environ = base_environ(
            tmp_path,
            OPENAI_API_KEY="sk-scripted-" + "x" * 30,
            VP_OPENAI_REALTIME_URL=f"ws://127.0.0.1:{self.upstream.port}/v1/realtime",
            VP_RECONNECT_ATTEMPTS="0",
            **database.environ,
        )
        self.platform = Platform(self.environ, tmp_path)
        self.api_key = json.loads(self.platform.shell(SETUP).splitlines()[-1])["api_key"]
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"{self.platform.ws_url}/v1/realtime?model=gpt-realtime-2"

    def kill(self) -> None:
        self.platform.process.send_signal(signal.SIGKILL)
        self.platform.process.wait(10)

    def restart(self) -> None:
        """A new Daphne process on the same port, data directory and journal directory."""
        self.restarts += 1
        self.platform.log.close()
        self.platform.log_path = self.platform.log_path.with_suffix(f".{self.restarts}.log")
        log = open(self.platform.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.platform.log = log
        self.platform.process = subprocess.Popen(
            server_command("daphne", self.platform.port),
            cwd=ROOT,
            env=self.environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def listening() -> bool:
            assert self.platform.process.poll() is None, self.platform.log_tail()
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", self.platform.port), timeout=1).close()
                return True
            return False

        until_sync(listening, "the restarted Daphne to listen", timeout=30)

    def journal_pending(self) -> int:
        """Entries on disk not yet in the database, every process's journal of the directory."""
        return sum(len(read_entries(path)[0]) for path in journal_files(self.journal_dir))

    @contextlib.contextmanager
    def diagnosed(self):
        """A failure also shows the journals and the server's log."""
        try:
            yield
        except Exception as error:
            journals = {
                path.name: (len(read_entries(path)[0]), path.stat().st_size)
                for path in journal_files(self.journal_dir)
            }
            raise AssertionError(
                f"{error}\njournals (pending, bytes): {journals}\n"
                f"server log:\n{self.platform.log_tail(6000)}"
            ) from error

    def stop(self) -> None:
        stop_process(self.platform.process)
        self.platform.log.close()
        self.upstream.stop()


class Client:
    """One API session over a real socket."""

    def __init__(self, platform: DurablePlatform) -> None:
        self.platform = platform
        self.connection = None
        self.closed_at: datetime | None = None

    async def open(self) -> Client:
        self.connection = await websockets.connect(
            self.platform.url,
            additional_headers={"Authorization": f"Bearer {self.platform.api_key}"},
        )
        event = json.loads(await asyncio.wait_for(self.connection.recv(), 15))
        assert event["type"] == "session.created", event
        return self

    async def respond(self) -> str:
        await self.connection.send(json.dumps({"type": "response.create"}))
        while True:
            event = json.loads(await asyncio.wait_for(self.connection.recv(), 15))
            assert event["type"] != "error", event
            if event["type"] == "response.done":
                return event["response"]["id"]

    async def close(self) -> None:
        self.closed_at = datetime.now(UTC)
        await self.connection.close()


@pytest.fixture
def platform_on(tmp_path):
    made: list[tuple[Database, DurablePlatform | None]] = []

    def make(kind: str) -> DurablePlatform:
        database = Database(kind, tmp_path)
        made.append((database, None))
        durable = DurablePlatform(tmp_path, database)
        made[-1] = (database, durable)
        return durable

    yield make
    for database, durable in made:
        if durable is not None:
            durable.stop()
        database.drop()


@needs_postgresql
async def test_a_60_s_postgresql_outage_under_10_sessions_loses_nothing(platform_on):
    durable = platform_on("postgresql")
    database = durable.database
    with durable.diagnosed():
        clients = [await Client(durable).open() for _ in range(SESSIONS)]
        for client in clients:
            await client.respond()
        await until(
            lambda: database.ledger() == durable.upstream.ledger(), "the first answers stored"
        )

        database.go_away()
        away_at = time.monotonic()
        came_back_at: datetime | None = None
        try:
            for client in clients:
                await client.respond()
            # Half the sessions end during the outage: their ends are journaled, with their time.
            for client in clients[: SESSIONS // 2]:
                await client.close()
            live = clients[SESSIONS // 2 :]

            def unwritten() -> int:  # the outage's answers and ends, all on disk
                return len(durable.upstream.sent) - SESSIONS + SESSIONS // 2

            await until(
                lambda: durable.journal_pending() == unwritten(), "the outage's records on disk"
            )
            # The live sessions keep talking, an answer each every 5 s, for the rest of the 60 s.
            while time.monotonic() - away_at < OUTAGE_S:
                await asyncio.gather(*(client.respond() for client in live))
                await asyncio.sleep(min(5.0, max(OUTAGE_S - (time.monotonic() - away_at), 0)))
            await until(
                lambda: durable.journal_pending() == unwritten(), "the outage's records on disk"
            )
        finally:
            database.come_back()
            came_back_at = datetime.now(UTC)

        for client in live:
            await client.respond()
            await client.close()

        await until(
            lambda: database.ledger() == durable.upstream.ledger(),
            "the ledger to equal the upstream's usage",
            timeout=60,
        )
        await until(
            lambda: all(ended for ended, _ in database.sessions().values()),
            "every session ended",
            timeout=30,
        )
        until_sync(lambda: durable.journal_pending() == 0, "the journal emptied")
        sessions = database.sessions()
        assert len(sessions) == SESSIONS
        assert {reason for _, reason in sessions.values()} == {"client_closed"}
        # Ended during the outage: at the real end, not when the database came back.
        ended_during = sorted(ended for ended, _ in sessions.values() if ended < came_back_at)
        assert len(ended_during) == SESSIONS // 2
        for client, ended in zip(clients[: SESSIONS // 2], ended_during, strict=True):
            assert abs(ended - client.closed_at) < timedelta(seconds=2), (ended, client.closed_at)
        assert len(database.ledger()) == len(durable.upstream.sent) > 2 * SESSIONS + 5


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite", marks=pytest.mark.skipif(
            bool(os.environ.get("DATABASE_URL")), reason="the PostgreSQL pass runs it there")),
        pytest.param("postgresql", marks=needs_postgresql),
    ],
)  # fmt: skip
async def test_kill_9_with_unwritten_records_replays_them_at_restart(platform_on, kind):
    durable = platform_on(kind)
    database = durable.database
    with durable.diagnosed():
        clients = [await Client(durable).open() for _ in range(3)]
        for client in clients:
            await client.respond()
        await until(
            lambda: database.ledger() == durable.upstream.ledger(), "the first answers stored"
        )

        database.go_away()
        try:
            for client in clients:
                await client.respond()
                await client.respond()
            await until(lambda: durable.journal_pending() == 6, "the unwritten answers on disk")
            durable.kill()
        finally:
            database.come_back()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.connection.close()
        assert durable.journal_pending() == 6  # the dead process's journal, whole
        assert len(database.ledger()) == 3

        durable.restart()
        # The restarted process replays as its journal service starts (at start-up with the ASGI
        # hook, else with its first session): this session also proves it serves.
        after = await Client(durable).open()
        await after.respond()
        await after.close()
        await until(
            lambda: database.ledger() == durable.upstream.ledger(),
            "the ledger to equal the upstream's usage",
            timeout=60,
        )
        until_sync(lambda: durable.journal_pending() == 0, "the orphaned journal replayed")
        assert len(database.ledger()) == 10
