"""The usage journal: on disk before anything else, out only once the database has it.

The file mechanics run against a fake database (``apply`` is the test's); orphan detection
against a real second process killed with SIGKILL; idempotence, the recorder and
``manage.py journal_replay`` against the test database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError

from agents import journal
from agents.journal import Journal, journal_files, read_entries
from tests.waiting import until, until_sync

ROOT = Path(__file__).resolve().parents[2]


class Unreachable(Exception):
    """The fake database is down (a connection problem: back off, retry everything)."""


class FakeDatabase:
    """Records what ``apply`` wrote; ``down`` makes every write fail as unreachable,
    ``refuse`` fails the entries whose key it names as a refusal (not a connection problem)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}
        self.writes: list[str] = []
        self.attempts = 0
        self.down = False
        self.refuse: set[str] = set()
        self.gate: threading.Event | None = None  # when set: apply waits for it
        self.lock = threading.Lock()

    def apply(self, entry: dict) -> None:
        if self.gate is not None:
            self.gate.wait(10)
        self.attempts += 1
        if self.down:
            raise Unreachable("connection refused")
        if entry["key"] in self.refuse:
            raise ValueError("refused")
        with self.lock:
            self.writes.append(entry["key"])
            self.rows.setdefault(entry["key"], entry)  # idempotent by key, as the ledger


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, Unreachable)


@pytest.fixture
def database():
    return FakeDatabase()


@pytest.fixture
def journals(tmp_path):
    made: list[Journal] = []

    def make(apply, *, start=True, token="abc123", **options) -> Journal:
        options.setdefault("backoff_initial_s", 0.01)
        options.setdefault("backoff_max_s", 0.05)
        options.setdefault("scan_every_s", 3600.0)
        made_journal = Journal(
            directory=tmp_path, database=token, apply=apply, is_transient=is_transient, **options
        )
        if start:
            made_journal.start()
        made.append(made_journal)
        return made_journal

    yield make
    for made_journal in made:
        made_journal.stop()


def usage(key: str, session_id: int = 1) -> dict:
    return {"key": key, "tenant_id": 1, "session_id": session_id, "usage": {"input_tokens": 7}}


# --- append, fsync, acknowledge -------------------------------------------------------------


def test_an_entry_is_on_disk_before_the_database_write_and_gone_after(journals, database):
    database.gate = threading.Event()
    depths: list[int] = []
    made = journals(database.apply, on_depth=depths.append)
    ticket = made.submit("usage", **usage("resp_1"))
    ticket.durable.result(5)
    entries, _ = read_entries(made.path)
    assert [(e["kind"], e["key"], e["usage"]) for e in entries.values()] == [
        ("usage", "resp_1", {"input_tokens": 7})
    ]
    assert made.depth() == 1
    assert not ticket.written.done()
    database.gate.set()
    ticket.written.result(5)
    assert database.rows["resp_1"]["usage"] == {"input_tokens": 7}
    assert made.depth() == 0
    assert depths == [1, 0]
    assert made.path.stat().st_size == 0  # nothing pending: truncated


def test_the_database_down_delays_entries_and_never_drops_them(journals, database):
    database.down = True
    made = journals(database.apply)
    tickets = [made.submit("usage", **usage(f"resp_{n}")) for n in range(5)]
    until_sync(lambda: not made.database_available(), "the journal to see the database down")
    until_sync(lambda: all(t.durable.done() for t in tickets), "the fsync")
    until_sync(lambda: database.attempts >= 10, "ten rounds of retries")
    assert made.depth() == 5
    assert len(read_entries(made.path)[0]) == 5
    assert database.writes == []
    database.down = False
    for ticket in tickets:
        ticket.written.result(5)
    assert database.writes == [f"resp_{n}" for n in range(5)]  # in order, each once
    assert made.database_available()
    assert made.depth() == 0


def test_after_a_long_outage_the_pool_is_replaced_once_after_a_blink_not(
    journals, database, monkeypatch
):
    monkeypatch.setattr(journal, "RESET_AFTER_S", 0.3)
    probes: list[float] = []
    resets: list[float] = []

    def probe() -> None:
        probes.append(time.monotonic())
        if database.down:
            raise Unreachable("connection refused")

    made = journals(database.apply, probe=probe, reset=lambda: resets.append(time.monotonic()))
    database.down = True
    blink = made.submit("usage", **usage("resp_blink"))
    until_sync(lambda: not made.database_available(), "the journal to see the database down")
    database.down = False
    blink.written.result(5)
    assert resets == []  # a blink: the pool reconnects by itself

    probes.clear()
    database.down = True
    made.report_database_error()  # e.g. a heartbeat failed: the journal probes on its own
    until_sync(lambda: len(probes) >= 3 and probes[-1] - probes[0] > 0.3, "a long outage")
    assert made.depth() == 0 and not made.database_available()
    database.down = False
    until_sync(made.database_available, "the probe to find the database back")
    assert len(resets) == 1
    made.submit("usage", **usage("resp_after")).written.result(5)
    assert len(resets) == 1
    assert database.writes == ["resp_blink", "resp_after"]


def test_a_refused_entry_is_kept_and_holds_nothing_back(journals, database):
    database.refuse = {"resp_bad"}
    made = journals(database.apply)
    made.submit("usage", **usage("resp_bad", session_id=1))
    end = made.submit("session_end", key="end_1", tenant_id=1, session_id=1)
    other = made.submit("usage", **usage("resp_ok", session_id=2))
    end.written.result(5)
    other.written.result(5)
    assert database.writes == ["end_1", "resp_ok"]
    assert made.depth() == 1
    assert [e["key"] for e in read_entries(made.path)[0].values()] == ["resp_bad"]
    database.refuse = set()  # fixed (e.g. a deployment): written at its next retry


def test_a_torn_last_line_is_ignored_and_acknowledged_entries_are_not_replayed(tmp_path):
    path = tmp_path / "vpj-abc123-1-00.jsonl"
    lines = [
        {"seq": 1, "kind": "usage", "key": "a"},
        {"seq": 2, "kind": "usage", "key": "b"},
        {"ack": 1},
    ]
    path.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines) + b'{"seq": 3')
    entries, size = read_entries(path)
    assert [e["key"] for e in entries.values()] == ["b"]
    assert size == path.stat().st_size


def test_a_file_much_larger_than_what_is_pending_is_rewritten(journals, database, monkeypatch):
    monkeypatch.setattr(journal, "REWRITE_MIN_BYTES", 2000)
    database.refuse = {"resp_stuck"}
    made = journals(database.apply)
    made.submit("usage", **usage("resp_stuck", session_id=99)).durable.result(5)
    for n in range(40):
        made.submit("usage", **usage(f"resp_{n}", session_id=n)).written.result(5)
    assert made.path.stat().st_size < 2000
    entries, _ = read_entries(made.path)
    assert [e["key"] for e in entries.values()] == ["resp_stuck"]
    assert made.depth() == 1


# --- the bound ------------------------------------------------------------------------------


def test_past_the_byte_bound_new_sessions_are_not_accepted(journals, database):
    database.down = True
    made = journals(database.apply, max_bytes=4096)
    assert made.accepting()
    ticket = None
    for n in range(20):
        ticket = made.submit("usage", **usage(f"resp_{n}"), padding="x" * 200)
    ticket.durable.result(5)
    assert made.bytes_on_disk() > 4096
    assert not made.accepting()
    assert made.depth() == 20  # still journaling: live sessions lose nothing
    database.down = False
    until_sync(lambda: made.depth() == 0, "the backlog to reach the database")
    assert made.accepting()


# --- orphans --------------------------------------------------------------------------------

WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from agents.journal import Journal

class Down(Exception):
    pass

def apply(entry):
    raise Down()

made = Journal(directory={directory!r}, database={token!r}, apply=apply,
               is_transient=lambda exc: True, backoff_initial_s=0.05, backoff_max_s=0.1)
made.start()
tickets = [made.submit("usage", key=f"resp_{{n}}", tenant_id=1, session_id=1) for n in range(3)]
for ticket in tickets:
    ticket.durable.result(5)
print(made.path, flush=True)
time.sleep(120)
"""


def start_writer(directory: Path, token: str) -> tuple[subprocess.Popen, Path]:
    code = WRITER.format(root=str(ROOT), directory=str(directory), token=token)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline().strip()
    assert line, "the writer process did not journal"
    return process, Path(line)


def test_a_dead_process_journal_is_replayed_once_and_deleted_a_live_one_is_left(
    journals, database, tmp_path
):
    process, path = start_writer(tmp_path, "abc123")
    try:
        scanner = journals(database.apply, start=False)
        assert scanner.replay_orphans(timeout=0.2) == (0, 0)  # alive: its lock is held
        assert path.exists()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        assert scanner.replay_orphans(timeout=5) == (3, 0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert database.writes == ["resp_0", "resp_1", "resp_2"]
    assert not path.exists()
    assert journal_files(tmp_path) == []


def test_the_service_replays_orphans_at_start_and_counts_them(journals, database, tmp_path):
    process, path = start_writer(tmp_path, "abc123")
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)
    database.down = True
    service = journals(database.apply)
    until_sync(lambda: service.orphans() == 1, "the orphan to be taken")
    assert service.depth() == 3
    database.down = False
    until_sync(lambda: service.orphans() == 0, "the orphan to be replayed")
    assert service.depth() == 0
    assert database.writes == ["resp_0", "resp_1", "resp_2"]
    assert not path.exists()


def test_orphans_of_another_database_are_left_and_of_an_in_memory_one_deleted(
    journals, database, tmp_path
):
    foreign, foreign_path = start_writer(tmp_path, "fff999")
    memory, memory_path = start_writer(tmp_path, journal.EPHEMERAL)
    for process in (foreign, memory):
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    scanner = journals(database.apply, start=False)
    assert scanner.replay_orphans(timeout=1) == (0, 0)
    assert database.writes == []
    assert foreign_path.exists()
    assert not memory_path.exists()


# --- against the database -------------------------------------------------------------------


@pytest.fixture
def live_session(db):
    from agents.models import Agent, Session
    from tenants import services
    from tenants.scoping import tenant_scope

    owner = services.user_get_or_create(email="o@example.com", password="pw-123456789")
    tenant = services.tenant_create(slug="acme", name="Acme", owner=owner)
    with tenant_scope(tenant):
        agent = Agent.objects.create(tenant=tenant, name="Support", provider="openai")
        session = Session.objects.create(
            tenant=tenant, agent=agent, channel="api", model="gpt-realtime-2"
        )
    return tenant, agent, session


def usage_entry(tenant, agent, session, key: str, occurred_at: datetime) -> dict:
    return {
        "kind": journal.USAGE, "seq": 1, "tenant_id": tenant.pk, "session_id": session.pk,
        "agent_id": agent.pk, "widget_key_id": None, "provider": "openai", "key": key,
        "model": "gpt-realtime-2", "status": "completed", "audio_ms": 0,
        "occurred_at": occurred_at.isoformat(),
        "usage": {"total_tokens": 300, "input_tokens": 100, "output_tokens": 200,
                  "input_token_details": {"text_tokens": 100, "audio_tokens": 0},
                  "output_token_details": {"text_tokens": 0, "audio_tokens": 200}},
    }  # fmt: skip


def end_entry(tenant, session, reason: str, ended_at: datetime) -> dict:
    return {
        "kind": journal.SESSION_END, "seq": 2, "tenant_id": tenant.pk, "session_id": session.pk,
        "reason": reason, "audio_in_ms": 1200, "audio_out_ms": 3400,
        "ended_at": ended_at.isoformat(),
    }  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_replaying_an_entry_twice_writes_it_once(live_session):
    from agents.models import Session
    from billing.models import UsageEvent
    from tenants.scoping import scopes_disabled

    tenant, agent, session = live_session
    happened = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
    ended = happened + timedelta(seconds=34)
    for _ in range(2):
        journal.apply_entry(usage_entry(tenant, agent, session, "resp_1", happened))
        journal.apply_entry(end_entry(tenant, session, "client_closed", ended))
    journal.apply_entry(end_entry(tenant, session, "abandoned", ended + timedelta(seconds=90)))
    with scopes_disabled():
        events = list(
            UsageEvent.objects.values_list(
                "upstream_response_id", "input_text_tokens", "output_audio_tokens", "occurred_at"
            )
        )
        row = Session.objects.values_list(
            "ended_at", "end_reason", "audio_in_ms", "audio_out_ms"
        ).get(pk=session.pk)
    assert events == [("resp_1", 100, 200, happened)]
    assert row == (ended, "client_closed", 1200, 3400)  # the real end, kept once


@pytest.mark.django_db(transaction=True)
def test_manage_journal_replay_writes_a_dead_process_journal(
    live_session, settings, tmp_path, monkeypatch
):
    from billing.models import UsageEvent
    from tenants.scoping import scopes_disabled

    tenant, agent, session = live_session
    settings.VP_JOURNAL_DIR = tmp_path
    # The embedded test database lives in memory (its journals are never replayed): name it.
    monkeypatch.setattr(journal, "database_token", lambda: "testdb")
    happened = datetime(2026, 11, 30, 8, 0, 0, tzinfo=UTC)
    lines = [
        {**usage_entry(tenant, agent, session, "resp_a", happened), "seq": 1},
        {**usage_entry(tenant, agent, session, "resp_b", happened), "seq": 2},
        {"ack": 1},  # already in the database before the crash: not written again
        {**end_entry(tenant, session, "client_closed", happened), "seq": 3},
    ]
    orphan = tmp_path / "vpj-testdb-999999-0a.jsonl"
    orphan.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    with pytest.raises(CommandError, match="2 journal entries pending"):
        call_command("journal_replay", "--check")
    call_command("journal_replay", "--timeout", "10")
    with scopes_disabled():
        keys = list(UsageEvent.objects.values_list("upstream_response_id", flat=True))
    assert keys == ["resp_b"]
    assert not orphan.exists()
    call_command("journal_replay", "--check")


def test_database_errors_that_mean_unreachable_are_transient_a_lock_is_only_contention():
    assert journal.is_transient(OperationalError("connection refused"))
    assert journal.is_unreachable(OperationalError("connection refused"))
    assert not journal.is_transient(ValueError("bad entry"))
    locked = OperationalError("database table is locked")
    assert journal.is_transient(locked) and not journal.is_unreachable(locked)


# --- the recorder: a database blink longer than the old retries ------------------------------

BLINK_S = 1.5  # the old recorder gave up after 1.2 s (retries after 0.2, 0.4 and 0.6 s)
USAGE = {"total_tokens": 300, "input_tokens": 100, "output_tokens": 200,
         "input_token_details": {"text_tokens": 100, "audio_tokens": 0},
         "output_token_details": {"text_tokens": 0, "audio_tokens": 200}}  # fmt: skip


class BlinkingUsageEvents:
    """Stands in for ``billing.services.UsageEvent``: the ledger's table is unreachable until
    ``until`` (monotonic), as when PostgreSQL restarts."""

    def __init__(self, model) -> None:
        self.model = model
        self.until = 0.0

    def __getattr__(self, name):
        if time.monotonic() < self.until:
            raise OperationalError("the database blinked")
        return getattr(self.model, name)


async def scripted_openai(connection) -> None:
    """Answers every ``response.create`` with a ``response.done`` carrying USAGE."""
    await connection.send(json.dumps({"type": "session.created", "session": {"id": "sess_up"}}))
    number = 0
    async for message in connection:
        event = json.loads(message)
        if event["type"] == "session.update":
            await connection.send(
                json.dumps({"type": "session.updated", "session": {"id": "sess_up"}})
            )
        elif event["type"] == "response.create":
            number += 1
            response = {"id": f"resp_blink_{number}", "status": "completed", "usage": USAGE}
            await connection.send(json.dumps({"type": "response.done", "response": response}))


@pytest.mark.django_db(transaction=True)
async def test_usage_survives_a_database_blink_and_the_heartbeat_follows_the_setting(
    live_session, settings, monkeypatch
):
    import websockets
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    import billing.services
    from agents.models import Session
    from billing.models import UsageEvent
    from tenants import services
    from tenants.scoping import scopes_disabled
    from voiceplatform.asgi import application

    tenant, agent, _ = live_session
    _, raw_key = await sync_to_async(services.api_key_issue)(
        tenant=tenant, name="backend", default_agent=agent
    )
    blinking = BlinkingUsageEvents(UsageEvent)
    monkeypatch.setattr(billing.services, "UsageEvent", blinking)
    settings.OPENAI_API_KEY = "sk-platform-" + "p" * 30
    settings.VP_SESSION_HEARTBEAT_SECONDS = 0.5

    def stored():
        with scopes_disabled():
            session = Session.objects.order_by("-pk").first()
            events = list(UsageEvent.objects.values_list("upstream_response_id", "session_id"))
            return session, events

    async with websockets.serve(scripted_openai, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        settings.VP_OPENAI_REALTIME_URL = f"ws://127.0.0.1:{port}/v1/realtime"
        communicator = WebsocketCommunicator(
            application,
            "/v1/realtime?model=gpt-realtime-2",
            headers=[(b"authorization", f"Bearer {raw_key}".encode())],
        )
        assert (await communicator.connect())[0]
        try:
            assert json.loads(await communicator.receive_from(5))["type"] == "session.created"
            session, _ = await sync_to_async(stored)()
            started_heartbeat = session.heartbeat_at
            before = journal.depth()  # the process's journal may hold other tests' leftovers
            blinking.until = time.monotonic() + BLINK_S
            await communicator.send_to(text_data=json.dumps({"type": "response.create"}))
            while json.loads(await communicator.receive_from(5))["type"] != "response.done":
                pass
            await until(lambda: journal.depth() == before + 1, "the usage record on disk")
            assert not (await sync_to_async(stored)())[1]
            events: list = []

            async def written() -> bool:
                nonlocal events
                events = (await sync_to_async(stored)())[1]
                return bool(events)

            deadline = time.monotonic() + 15
            while not await written():
                assert time.monotonic() < deadline, "the usage record was lost"
                await asyncio.sleep(0.05)
            assert events == [("resp_blink_1", session.pk)]
            assert journal.depth() == before
            deadline = time.monotonic() + 5
            while (await sync_to_async(stored)())[0].heartbeat_at == started_heartbeat:
                assert time.monotonic() < deadline, "no heartbeat at VP_SESSION_HEARTBEAT_SECONDS"
                await asyncio.sleep(0.05)
        finally:
            await communicator.disconnect()
    session, events = await sync_to_async(stored)()
    assert events == [("resp_blink_1", session.pk)]
    assert session.end_reason == "client_closed"


@pytest.mark.django_db(transaction=True)
def test_the_end_entry_carries_the_time_to_first_answer_audio_and_older_entries_replay(
    live_session,
):
    from agents.models import Session
    from tenants.scoping import scopes_disabled

    tenant, _, session = live_session
    ended = datetime(2026, 11, 30, 8, 0, 34, tzinfo=UTC)
    journal.apply_entry(
        {**end_entry(tenant, session, "client_closed", ended), "first_audio_ms": 640}
    )
    with scopes_disabled():
        stored = Session.objects.values_list("first_audio_ms", flat=True).get(pk=session.pk)
        older = Session.objects.create(
            tenant=tenant, agent_id=session.agent_id, channel="api", model="gpt-realtime-2"
        )
    assert stored == 640
    journal.apply_entry(end_entry(tenant, older, "client_closed", ended))  # written before it
    with scopes_disabled():
        assert Session.objects.values_list("first_audio_ms", "end_reason").get(pk=older.pk) == (
            None, "client_closed",
        )  # fmt: skip
