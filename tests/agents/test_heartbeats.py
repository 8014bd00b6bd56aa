"""A process's live sessions beat together: one database call per interval for all of them
(tenants kept apart), none while the journal sees the database down, and the task ends with its
last session."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from agents import heartbeats, journal, services
from agents.configuration import agent_create
from agents.models import Session
from agents.services import session_start
from tenants.scoping import scopes_disabled

pytestmark = pytest.mark.django_db(transaction=True)

INTERVAL = 0.05


async def until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def sessions_of_two_tenants(world) -> list[Session]:
    made = []
    for tenant, count in ((world.tenant_a, 2), (world.tenant_b, 1)):
        agent = agent_create(
            tenant=tenant, actor=None,
            fields={"name": "Support", "provider": "openai", "model": "gpt-realtime-2"},
        )  # fmt: skip
        made += [
            session_start(tenant=tenant, agent=agent, channel="api", end_user=f"u{i}")
            for i in range(count)
        ]
    return made


def stored(sessions: list[Session]) -> dict[int, tuple]:
    with scopes_disabled():
        rows = Session.objects.filter(pk__in=[s.pk for s in sessions])
        return {
            row.pk: (row.heartbeat_at, row.audio_in_ms, row.audio_out_ms, row.tenant_id)
            for row in rows
        }


@pytest.fixture
def calls(monkeypatch) -> list[list[services.Heartbeat]]:
    made: list[list[services.Heartbeat]] = []
    real = services.sessions_heartbeat

    def counted(beats):
        made.append(list(beats))
        real(beats)

    monkeypatch.setattr(services, "sessions_heartbeat", counted)
    return made


async def test_one_call_beats_every_session_of_the_process(world, calls):
    sessions = await sync_to_async(sessions_of_two_tenants)(world)
    before = await sync_to_async(stored)(sessions)
    beating = heartbeats.for_interval(INTERVAL)
    for number, session in enumerate(sessions, start=1):
        beating.add(
            session_id=session.pk,
            tenant_id=session.tenant_id,
            audio=lambda n=number: (n * 1000, n * 500),
        )
    await until(lambda: calls, "a beat")
    beating.discard(sessions[0].pk)
    beating.discard(sessions[1].pk)
    beating.discard(sessions[2].pk)

    assert sorted(beat.session_id for beat in calls[0]) == sorted(s.pk for s in sessions)
    after = await sync_to_async(stored)(sessions)
    beat_times = {after[s.pk][0] for s in sessions}
    assert len(beat_times) == 1  # one beat for all
    assert beat_times.pop() > max(row[0] for row in before.values())
    for number, session in enumerate(sessions, start=1):
        assert after[session.pk][1:] == (number * 1000, number * 500, session.tenant_id)


async def test_no_beat_while_the_database_is_down_and_one_as_soon_as_it_is_back(
    world, calls, monkeypatch
):
    [session, *_] = await sync_to_async(sessions_of_two_tenants)(world)
    asked: list[bool] = []

    class DownTwice:
        def database_available(self) -> bool:
            asked.append(len(asked) >= 2)
            return asked[-1]

        def report_database_error(self) -> None:
            raise AssertionError("nothing was attempted")

    monkeypatch.setattr(journal, "get", DownTwice)
    beating = heartbeats.for_interval(INTERVAL)
    beating.add(session_id=session.pk, tenant_id=session.tenant_id, audio=lambda: (20, 10))
    await until(lambda: calls, "the beat once the database is back")
    beating.discard(session.pk)
    assert asked[:3] == [False, False, True]
    assert [[beat.session_id for beat in call] for call in calls][0] == [session.pk]


async def test_the_task_ends_with_the_last_session_and_starts_again_with_the_next(world):
    [first, second, _] = await sync_to_async(sessions_of_two_tenants)(world)
    beating = heartbeats.for_interval(INTERVAL)
    beating.add(session_id=first.pk, tenant_id=first.tenant_id, audio=lambda: (0, 0))
    task = beating._task
    beating.add(session_id=second.pk, tenant_id=second.tenant_id, audio=lambda: (0, 0))
    assert beating._task is task and len(beating) == 2
    beating.discard(first.pk)
    assert not task.done() and len(beating) == 1
    beating.discard(second.pk)
    await asyncio.wait([task], timeout=5)
    assert task.cancelled() and len(beating) == 0
    beating.add(session_id=first.pk, tenant_id=first.tenant_id, audio=lambda: (0, 0))
    assert beating._task is not None and not beating._task.done()
    beating.discard(first.pk)
    assert heartbeats.for_interval(INTERVAL) is beating  # one per loop and interval
