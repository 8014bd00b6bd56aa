"""Admission at the service level: atomic against concurrent starts, blind to dead sessions,
closed by spent caps; and the sweep that ends a dead process's sessions at their last heartbeat.

The same across processes, against real Daphne processes: tests/platform/test_admission.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connections
from django.utils import timezone

from agents.access import AccessDenied, admission_check
from agents.configuration import agent_create
from agents.models import Session
from agents.services import (
    session_end_record,
    session_heartbeat,
    session_start,
    sessions_sweep_abandoned,
)
from agents.tokens import console_token_mint, widget_token_mint
from billing.services import spend_cap_set
from tenants import services as tenant_services
from tenants.metrics import ADMISSIONS_REFUSED
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from tests.billing.conftest import record

SHOP = "https://shop.example"


def refused_count(code: str) -> float:
    return ADMISSIONS_REFUSED.labels(code)._value.get()


def set_limit(tenant, limit: int) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(max_concurrent_sessions=limit)
    tenant.refresh_from_db()


def start(tenant, agent, **extra) -> Session:
    return session_start(tenant=tenant, agent=agent, channel="api", end_user="u", **extra)


def open_sessions(tenant) -> list[Session]:
    with tenant_scope(tenant):
        return list(Session.objects.filter(ended_at__isnull=True).order_by("pk"))


def age_heartbeat(session: Session, seconds: float) -> None:
    with scopes_disabled():
        Session.objects.filter(pk=session.pk).update(
            heartbeat_at=timezone.now() - timedelta(seconds=seconds)
        )


@pytest.fixture
def agent(world):
    return agent_create(
        tenant=world.tenant_a, actor=None,
        fields={"name": "Support", "provider": "openai", "model": "gpt-realtime-2"},
    )  # fmt: skip


# --- atomicity ------------------------------------------------------------------------------


def burst(tenant, agent, size: int) -> tuple[int, list[str]]:
    """``size`` threads start a session at the same moment: (admitted, refusal codes)."""
    gate = threading.Barrier(size)
    admitted, refusals, failures = [], [], []

    def one() -> None:
        try:
            gate.wait(timeout=10)
            admitted.append(start(tenant, agent).pk)
        except AccessDenied as denied:
            refusals.append(denied.code)
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(repr(error))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    return len(admitted), refusals


@pytest.fixture
def lockable_database(world, agent, tmp_path):
    """The test database as other connections see it, where they really contend for locks.

    On PostgreSQL it is as it is. SQLite's in-memory test database is shared through SQLite's
    shared cache, where a writer that finds the database busy fails at once ("database table is
    locked") instead of waiting as on a file: so the threads get a file copy of it (WAL, a busy
    timeout: the embedded platform's own setup). Only new connections open the copy; this
    thread's in-memory connection is left alone (closing it would drop the database).
    """
    connection = connections["default"]
    if connection.vendor != "sqlite":
        yield
        return
    copy = tmp_path / "admission.sqlite3"
    connection.ensure_connection()
    with sqlite3.connect(copy) as target:
        connection.connection.backup(target)
    database = connections.settings["default"]
    name = database["NAME"]
    database["NAME"] = str(copy)
    try:
        yield
    finally:
        database["NAME"] = name


def in_thread(function):
    """Run ``function`` on a connection of its own (and close it): its result."""
    result: list = []

    def run() -> None:
        try:
            result.append(function())
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    return result[0]


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_never_pass_the_limit(world, agent, lockable_database, monkeypatch):
    in_thread(lambda: set_limit(world.tenant_a, 5))
    # Widen the window between counting and creating that the old check-then-create left open:
    # each insert takes 20 ms, so all eight counts of a burst land before the first insert.
    save = Session.save

    def slow_save(self, *args, **kwargs):
        time.sleep(0.02)
        return save(self, *args, **kwargs)

    monkeypatch.setattr(Session, "save", slow_save)
    before = refused_count("too_many_sessions")

    def end_all() -> int:
        sessions = open_sessions(world.tenant_a)
        for session in sessions:
            session_end_record(session_id=session.pk, tenant_id=world.tenant_a.pk,
                               reason="client_closed", audio_in_ms=0, audio_out_ms=0)  # fmt: skip
        return len(sessions)

    for _ in range(3):
        admitted, refusals = burst(world.tenant_a, agent, 8)
        assert (admitted, refusals) == (5, ["too_many_sessions"] * 3)
        assert in_thread(end_all) == 5
    assert refused_count("too_many_sessions") - before == 9


# --- dead processes -----------------------------------------------------------------------


def test_a_session_silent_for_the_stale_time_stops_counting(world, agent, settings):
    assert settings.VP_SESSION_STALE_SECONDS == 30
    set_limit(world.tenant_a, 1)
    before = timezone.now()
    first = start(world.tenant_a, agent)
    assert before <= first.heartbeat_at <= timezone.now()  # alive from its creation
    age_heartbeat(first, 29)
    with pytest.raises(AccessDenied) as refused:
        start(world.tenant_a, agent)
    assert refused.value.code == "too_many_sessions"
    age_heartbeat(first, 31)  # its process died half a minute ago
    second = start(world.tenant_a, agent)
    assert [session.pk for session in open_sessions(world.tenant_a)] == [first.pk, second.pk]


def test_the_sweep_ends_dead_sessions_at_their_last_heartbeat(world, agent):
    now = timezone.now()
    dead, quiet, live, ended = (start(world.tenant_a, agent) for _ in range(4))
    heartbeats = {
        dead.pk: now - timedelta(seconds=31),
        quiet.pk: now - timedelta(seconds=29),
        live.pk: now,
        ended.pk: now - timedelta(minutes=5),
    }
    with scopes_disabled():
        for pk, heartbeat in heartbeats.items():
            Session.objects.filter(pk=pk).update(heartbeat_at=heartbeat, audio_in_ms=pk)
    end_time = now - timedelta(minutes=4)
    session_end_record(session_id=ended.pk, tenant_id=world.tenant_a.pk, reason="client_closed",
                       audio_in_ms=7, audio_out_ms=0, ended_at=end_time)  # fmt: skip

    assert sessions_sweep_abandoned(now=now) == 1
    assert sessions_sweep_abandoned(now=now) == 0
    with scopes_disabled():
        rows = {
            row["pk"]: row
            for row in Session.objects.values("pk", "ended_at", "end_reason", "audio_in_ms")
        }
    assert rows[dead.pk] == {"pk": dead.pk, "ended_at": heartbeats[dead.pk],
                             "end_reason": "abandoned", "audio_in_ms": dead.pk}  # fmt: skip
    assert (rows[quiet.pk]["ended_at"], rows[live.pk]["ended_at"]) == (None, None)
    assert (rows[ended.pk]["ended_at"], rows[ended.pk]["end_reason"]) == (end_time, "client_closed")
    # Two seconds later the quiet one has been silent for 31 s: ended at its heartbeat too.
    assert sessions_sweep_abandoned(now=now + timedelta(seconds=2)) == 1
    with scopes_disabled():
        assert Session.objects.get(pk=quiet.pk).ended_at == heartbeats[quiet.pk]
    # The sweep's is a guess: the session's own end, arriving late (journaled during a database
    # outage, replayed after a crash), replaces it with the real time; the first real end stays.
    real_end = heartbeats[dead.pk] + timedelta(seconds=3)
    for reason in ("client_closed", "server_shutdown"):
        session_end_record(session_id=dead.pk, tenant_id=world.tenant_a.pk, reason=reason,
                           audio_in_ms=1, audio_out_ms=1, ended_at=real_end)  # fmt: skip
    with scopes_disabled():
        row = Session.objects.get(pk=dead.pk)
    assert (row.ended_at, row.end_reason) == (real_end, "client_closed")


def test_a_heartbeat_reopens_a_session_the_sweep_took_for_dead(world, agent):
    """A database outage longer than the stale time holds every heartbeat up: the sweep may
    end live sessions, which their next heartbeat reopens (a really ended one stays ended)."""
    alive, closed = start(world.tenant_a, agent), start(world.tenant_a, agent)
    age_heartbeat(alive, 40)
    age_heartbeat(closed, 40)
    assert sessions_sweep_abandoned() == 2
    session_end_record(session_id=closed.pk, tenant_id=world.tenant_a.pk, reason="client_closed",
                       audio_in_ms=0, audio_out_ms=0)  # fmt: skip
    for session in (alive, closed):
        session_heartbeat(session_id=session.pk, tenant_id=world.tenant_a.pk,
                          audio_in_ms=500, audio_out_ms=200)  # fmt: skip
    with scopes_disabled():
        rows = dict(Session.objects.values_list("pk", "end_reason"))
        assert Session.objects.get(pk=alive.pk).ended_at is None
    assert rows == {alive.pk: "", closed.pk: "client_closed"}
    assert [session.pk for session in open_sessions(world.tenant_a)] == [alive.pk]


def test_the_sweep_runs_as_often_as_sessions_heartbeat(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["sessions-sweep-abandoned"]
    assert entry["schedule"] == settings.VP_SESSION_HEARTBEAT_SECONDS == 10
    assert settings.VP_SESSION_HEARTBEAT_SECONDS < settings.VP_SESSION_STALE_SECONDS


# --- spend caps -----------------------------------------------------------------------------


def test_admission_refuses_once_a_daily_cap_is_spent(world, agent):
    widget_key = tenant_services.widget_key_create(
        tenant=world.tenant_a, name="Shop", allowed_origins=[SHOP]
    )
    spend_cap_set(tenant_id=world.tenant_a.pk, agent_id=agent.pk, daily_limit_usd=Decimal("1"))
    spend_cap_set(tenant_id=world.tenant_a.pk, widget_key_id=widget_key.pk,
                  daily_limit_usd=Decimal("0.50"))  # fmt: skip
    before = refused_count("budget_exhausted")
    # $0.64 of the agent today through the widget key: the key's cap is spent, the agent's not.
    record(world.tenant_a, agent, "r1", timezone.now(), widget_key=widget_key, audio_out=10_000)
    start(world.tenant_a, agent)  # an API session spends against the agent's cap only
    with pytest.raises(AccessDenied) as refused:
        start(world.tenant_a, agent, widget_key_id=widget_key.pk)
    assert (refused.value.code, refused.value.close_code, refused.value.status) == (
        "budget_exhausted", 4402, 402,
    )  # fmt: skip
    assert "widget key daily cap" in refused.value.message
    with pytest.raises(AccessDenied) as minted:
        widget_token_mint(key=widget_key.key, origin=SHOP, agent_id=agent.pk)
    assert minted.value.code == "budget_exhausted"
    # $0.64 more crosses the agent's $1 cap: no new session of it by any door.
    record(world.tenant_a, agent, "r2", timezone.now(), audio_out=10_000)
    for attempt in (
        lambda: start(world.tenant_a, agent),
        lambda: console_token_mint(agent=agent, end_user="u"),
        lambda: admission_check(tenant=world.tenant_a, agent=agent),
    ):
        with pytest.raises(AccessDenied) as refused:
            attempt()
        assert (refused.value.code, refused.value.close_code) == ("budget_exhausted", 4402)
        assert "agent daily cap" in refused.value.message
    assert len(open_sessions(world.tenant_a)) == 1
    assert refused_count("budget_exhausted") - before == 5
    # Another agent of the tenant has no cap: it is still admitted.
    other = agent_create(tenant=world.tenant_a, actor=None, fields={"name": "FAQ"})
    start(world.tenant_a, other)


def test_yesterdays_spend_does_not_close_today(world, agent):
    spend_cap_set(tenant_id=world.tenant_a.pk, agent_id=agent.pk, daily_limit_usd=Decimal("1"))
    record(world.tenant_a, agent, "old", timezone.now() - timedelta(days=1), audio_out=100_000)
    start(world.tenant_a, agent)


def test_a_full_usage_journal_closes_admission(world, agent, monkeypatch):
    """Past VP_JOURNAL_MAX_BYTES of unwritten usage on this host (how the journal counts it:
    tests/agents/test_journal.py), new sessions are refused (503/4013, "try again") rather than
    admitted with nowhere safe to record their usage."""
    from agents import journal

    service = journal.get()
    monkeypatch.setattr(service, "bytes_on_disk", lambda: service.max_bytes + 1)
    with pytest.raises(AccessDenied) as refused:
        start(world.tenant_a, agent)
    assert (refused.value.code, refused.value.status, refused.value.close_code) == (
        "usage_journal_full", 503, 4013,
    )  # fmt: skip
    monkeypatch.undo()
    assert start(world.tenant_a, agent).pk
