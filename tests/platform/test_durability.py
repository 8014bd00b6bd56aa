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
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.journal import journal_files, read_entries
from tests.servers import Platform, api_connect, base_environ
from tests.services import OwnDatabase, needs_postgresql, timestamp
from tests.upstreams import ScriptedUpstream, scripted_agent_create
from tests.waiting import until, until_sync

OUTAGE_S = 60.0
SESSIONS = 10
TOKEN_FIELDS = ("input_text_tokens", "input_audio_tokens", "cached_text_tokens",
                "cached_audio_tokens", "output_text_tokens", "output_audio_tokens")  # fmt: skip


class UsageUpstream(ScriptedUpstream):
    """Answers every ``response.create`` with usage no other response has; ``sent`` is its
    side of the ledger."""

    def __init__(self) -> None:
        self.answers = 0
        super().__init__(mode="distinct")

    def _usage(self) -> dict:
        """Usage no other response has: every count differs from every other response's."""
        self.answers += 1
        k = self.answers
        return {
            "total_tokens": 1000 * k, "input_tokens": 31 * k, "output_tokens": 47 * k,
            "input_token_details": {
                "text_tokens": 11 * k, "audio_tokens": 20 * k, "cached_tokens": 5 * k,
                "cached_tokens_details": {"text_tokens": 2 * k, "audio_tokens": 3 * k}},
            "output_token_details": {"text_tokens": 13 * k, "audio_tokens": 34 * k},
        }  # fmt: skip

    async def _distinct(self, connection) -> None:
        async for message in connection:
            if json.loads(message).get("type") == "response.create":
                usage = self._usage()
                await self._respond(connection, f"resp_{self.answers}", deltas=0, usage=usage)

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


def stored_ledger(database: OwnDatabase) -> dict[str, tuple[int, ...]]:
    """The usage ledger (``billing_usageevent``) by response id, in TOKEN_FIELDS' columns."""
    rows = database.rows(
        f"SELECT upstream_response_id, {', '.join(TOKEN_FIELDS)} FROM billing_usageevent"
    )
    result = {row[0]: tuple(row[1:]) for row in rows}
    assert len(result) == len(rows), "a response counted twice"
    return result


def session_ends(database: OwnDatabase) -> dict[int, tuple]:
    rows = database.rows("SELECT id, ended_at, end_reason FROM agents_session")
    return {pk: (timestamp(ended_at), reason) for pk, ended_at, reason in rows}


class DurablePlatform:
    """The demo platform in one Daphne process, on ``database``, with the usage upstream."""

    def __init__(self, tmp_path: Path, database: OwnDatabase) -> None:
        self.database = database
        self.upstream = UsageUpstream()
        self.journal_dir = tmp_path / "journal"
        self.environ = base_environ(
            tmp_path,
            **self.upstream.environ,
            VP_RECONNECT_ATTEMPTS="0",
            **database.environ,
        )
        self.platform = Platform(self.environ, tmp_path)
        self.api_key = scripted_agent_create(self.platform, max_concurrent_sessions=100)["api_key"]
        self.restarts = 0

    def kill(self) -> None:
        self.platform.process.send_signal(signal.SIGKILL)
        self.platform.process.wait(10)

    def restart(self) -> None:
        """A new Daphne process on the same port, data directory and journal directory."""
        self.restarts += 1
        self.platform.log.close()
        self.platform.log_path = self.platform.log_path.with_suffix(f".{self.restarts}.log")
        self.platform.start()

    def ledger_complete(self) -> bool:
        """The ledger holds exactly what the upstream sent."""
        return stored_ledger(self.database) == self.upstream.ledger()

    async def ledger_settled(self) -> None:
        """Wait (60 s at most: replays and retries) until ``ledger_complete``."""
        await until(self.ledger_complete, "the ledger to equal the upstream's usage", timeout=60)

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
        self.platform.stop()
        self.upstream.stop()


class Client:
    """One API session over a real socket."""

    def __init__(self, platform: DurablePlatform) -> None:
        self.platform = platform
        self.connection = None
        self.closed_at: datetime | None = None

    async def open(self) -> Client:
        self.connection = await api_connect(self.platform.platform.ws_url, self.platform.api_key)
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
    made: list[tuple[OwnDatabase, DurablePlatform | None]] = []

    def make(kind: str) -> DurablePlatform:
        database = OwnDatabase(kind, tmp_path, "durability")
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
        await until(durable.ledger_complete, "the first answers stored")

        database.refuse_connections()
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
            database.allow_connections()
            came_back_at = datetime.now(UTC)

        for client in live:
            await client.respond()
            await client.close()

        await durable.ledger_settled()
        await until(
            lambda: all(ended for ended, _ in session_ends(database).values()),
            "every session ended",
            timeout=30,
        )
        until_sync(lambda: durable.journal_pending() == 0, "the journal emptied")
        sessions = session_ends(database)
        assert len(sessions) == SESSIONS
        assert {reason for _, reason in sessions.values()} == {"client_closed"}
        # Ended during the outage: at the real end, not when the database came back.
        ended_during = sorted(ended for ended, _ in sessions.values() if ended < came_back_at)
        assert len(ended_during) == SESSIONS // 2
        for client, ended in zip(clients[: SESSIONS // 2], ended_during, strict=True):
            assert abs(ended - client.closed_at) < timedelta(seconds=2), (ended, client.closed_at)
        assert len(stored_ledger(database)) == len(durable.upstream.sent) > 2 * SESSIONS + 5


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
        await until(durable.ledger_complete, "the first answers stored")

        database.refuse_connections()
        try:
            for client in clients:
                await client.respond()
                await client.respond()
            await until(lambda: durable.journal_pending() == 6, "the unwritten answers on disk")
            durable.kill()
        finally:
            database.allow_connections()
        for client in clients:
            with contextlib.suppress(Exception):
                await client.connection.close()
        assert durable.journal_pending() == 6  # the dead process's journal, whole
        assert len(stored_ledger(database)) == 3

        durable.restart()
        # The restarted process replays as its journal service starts (at start-up with the ASGI
        # hook, else with its first session): this session also proves it serves.
        after = await Client(durable).open()
        await after.respond()
        await after.close()
        await durable.ledger_settled()
        until_sync(lambda: durable.journal_pending() == 0, "the orphaned journal replayed")
        assert len(stored_ledger(database)) == 10
