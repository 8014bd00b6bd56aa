"""The ledger is exactly-once; daily tallies are derived, idempotent, concurrent-safe."""

import threading
from datetime import date
from decimal import Decimal

import pytest
from django.db import connection

from agents.models import Session
from billing.models import UsageEvent, UsageTally
from billing.selectors import usage_summary
from billing.services import tally_rebuild, tally_recompute_day, tally_session, tally_sweep
from tenants.scoping import scopes_disabled, tenant_scope
from tests.billing.conftest import at, record
from tests.conftest import require_service


def tallies(tenant):
    with tenant_scope(tenant):
        return sorted(
            UsageTally.objects.values_list(
                "day", "agent_id", "model", "provider", "responses", "input_audio_tokens",
                "cached_audio_tokens", "output_audio_tokens", "audio_ms",
            )
        )  # fmt: skip


def test_the_same_response_done_twice_is_recorded_once(world, agents_a):
    support = agents_a["support"]
    when = at(2026, 10, 3)
    assert record(world.tenant_a, support, "resp_1", when, audio_in=1000, audio_out=500)
    assert not record(world.tenant_a, support, "resp_1", when, audio_in=1000, audio_out=500)
    with tenant_scope(world.tenant_a):
        assert UsageEvent.objects.count() == 1


def test_tally_folds_events_per_day_agent_and_model_and_twice_changes_nothing(world, agents_a):
    support, faq = agents_a["support"], agents_a["faq"]
    record(world.tenant_a, support, "r1", at(2026, 10, 3, 9), audio_in=1000, cached_audio=200)
    record(world.tenant_a, support, "r2", at(2026, 10, 3, 23, 59), audio_in=500, audio_out=70,
           status="cancelled")  # fmt: skip
    record(world.tenant_a, faq, "r3", at(2026, 10, 3, 10), audio_out=40)
    record(world.tenant_a, support, "r4", at(2026, 10, 4, 0, 0), audio_out=9)
    record(world.tenant_b, None, "rb", at(2026, 10, 3), audio_out=12345)
    assert tally_recompute_day(tenant_id=world.tenant_a.pk, day=date(2026, 10, 3)) == 2
    first = tallies(world.tenant_a)
    assert first == sorted([
        (date(2026, 10, 3), support.pk, "gpt-realtime-2", "openai", 2, 1500, 200, 70, 0),
        (date(2026, 10, 3), faq.pk, "gpt-realtime-mini", "openai", 1, 0, 0, 40, 0),
    ])  # fmt: skip
    tally_recompute_day(tenant_id=world.tenant_a.pk, day=date(2026, 10, 3))
    assert tallies(world.tenant_a) == first
    # The sweep picks up what is left (the 4th, and tenant B), and then finds nothing new.
    assert tally_sweep() == 2
    assert tally_sweep() == 0
    assert tallies(world.tenant_a)[-1] == (
        date(2026, 10, 4),
        support.pk,
        "gpt-realtime-2",
        "openai",
        1,
        0,
        0,
        9,
        0,
    )
    assert [row[5:] for row in tallies(world.tenant_b)] == [(0, 0, 12345, 0)]


def test_tallies_rebuild_from_the_ledger(world, agents_a):
    support = agents_a["support"]
    record(world.tenant_a, support, "r1", at(2026, 10, 3), audio_in=1000)
    tally_sweep()
    before = tallies(world.tenant_a)
    with tenant_scope(world.tenant_a):
        UsageTally.objects.all().delete()
        UsageTally.objects.create(tenant=world.tenant_a, day=date(2026, 10, 5), model="junk",
                                  provider="openai", computed_at=at(2026, 10, 5))  # fmt: skip
    assert tally_rebuild(tenant_id=world.tenant_a.pk, start=date(2026, 10, 1),
                         end=date(2026, 10, 31)) == 31  # fmt: skip
    assert tallies(world.tenant_a) == before


def test_tally_session_covers_the_days_of_its_events(world, agents_a):
    support = agents_a["support"]
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=support, channel="widget",
                                          model="gpt-realtime-2")  # fmt: skip
    record(world.tenant_a, support, "r1", at(2026, 10, 3, 23, 59), session=session, audio_out=1)
    record(world.tenant_a, support, "r2", at(2026, 10, 4, 0, 1), session=session, audio_out=2)
    record(world.tenant_a, support, "r3", at(2026, 10, 5), audio_out=4)  # another session
    assert tally_session(session_id=session.pk) == 2
    assert [(row[0], row[7]) for row in tallies(world.tenant_a)] == [
        (date(2026, 10, 3), 1),
        (date(2026, 10, 4), 2),
    ]


def test_usage_summary_costs_the_tallies(world, agents_a):
    support, faq = agents_a["support"], agents_a["faq"]
    record(world.tenant_a, support, "r1", at(2026, 10, 3), audio_in=10_000, cached_audio=4_000,
           audio_out=2_000)  # fmt: skip
    record(world.tenant_a, faq, "r2", at(2026, 10, 4), audio_in=1_000_000, audio_out=1_000_000)
    tally_sweep()
    summary = usage_summary(
        tenant_id=world.tenant_a.pk, start=date(2026, 10, 1), end=date(2026, 10, 31)
    )
    assert summary.cost == Decimal("0.3216") + Decimal("3")
    assert summary.by_day_and_model[date(2026, 10, 3)] == {"gpt-realtime-2": Decimal("0.3216")}
    assert summary.by_day_and_model[date(2026, 10, 4)] == {"gpt-realtime-mini": Decimal("3")}
    assert len(summary.by_day_and_model) == 31
    assert summary.tokens_by_type["audio_in"] == 1_006_000
    assert summary.tokens_by_type["audio_cached"] == 4_000


@pytest.mark.django_db(transaction=True)
def test_two_workers_tallying_at_once_on_postgresql(world, agents_a):
    require_service("PostgreSQL", "127.0.0.1", 5432)
    if connection.vendor != "postgresql":
        pytest.skip("concurrency needs PostgreSQL (DATABASE_URL)")
    support = agents_a["support"]
    for index in range(200):
        record(world.tenant_a, support, f"r{index}", at(2026, 10, 3, 1 + index % 20),
               audio_in=100 + index, audio_out=7)  # fmt: skip
    barrier = threading.Barrier(4)
    errors = []

    def work(kind):
        try:
            barrier.wait()
            for _ in range(5):
                if kind == "day":
                    tally_recompute_day(tenant_id=world.tenant_a.pk, day=date(2026, 10, 3))
                else:
                    tally_sweep()
        except Exception as error:  # surfaced below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(kind,)) for kind in ("day", "day", "sweep",
                                                                        "sweep")]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    expected_in = sum(100 + index for index in range(200))
    assert tallies(world.tenant_a) == [
        (date(2026, 10, 3), support.pk, "gpt-realtime-2", "openai", 200, expected_in, 0, 1400, 0)
    ]
    with scopes_disabled():
        assert UsageEvent.objects.filter(tallied_at__isnull=True).count() == 0


def test_usage_report_gains_costs(world, agents_a, capsys):
    import json

    from django.core.management import call_command
    from django.utils import timezone

    record(world.tenant_a, agents_a["support"], "r1", timezone.now(), audio_in=10_000,
           cached_audio=4_000, audio_out=2_000)  # fmt: skip
    call_command("usage_report", "--tenant", "tenant-a", "--json")
    report = json.loads(capsys.readouterr().out)
    assert report["models"]["gpt-realtime-2"]["cost_usd"] == "0.3216"
    assert (report["provider_cost_usd"], report["billed_usd"]) == ("0.3216", "0.3216")
    call_command("usage_report", "--tenant", "tenant-a")
    assert "provider cost $0.32, billed $0.32" in capsys.readouterr().out


def test_enqueue_session_tally_sends_the_task_on_commit(
    world, monkeypatch, django_capture_on_commit_callbacks
):
    from billing import tasks

    sent = []
    monkeypatch.setattr(tasks.tally_session, "delay", lambda session_id: sent.append(session_id))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tasks.enqueue_session_tally(42)
    assert sent == []
    for callback in callbacks:
        callback()
    assert sent == [42]

    def broker_down(session_id):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.tally_session, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.enqueue_session_tally(43)  # logged, not raised: the sweep catches up


def test_tasks_take_ids_and_call_the_services(world, agents_a):
    from billing import tasks

    record(world.tenant_a, agents_a["support"], "r1", at(2026, 10, 3), audio_out=5)
    assert tasks.tally_sweep.apply().get() == 1
    assert tasks.tally_session.apply(args=(123456,)).get() == 0
    assert tasks.invoices_close_previous_month.apply().get()["failed"] == 0


def test_session_page_cost_helpers(world, agents_a):
    from billing.selectors import event_cost, events_total_cost

    record(world.tenant_a, agents_a["support"], "r1", at(2026, 10, 3), audio_in=10_000,
           cached_audio=4_000, audio_out=2_000)  # fmt: skip
    record(world.tenant_a, agents_a["faq"], "r2", at(2026, 10, 3), audio_out=1_000_000)
    with tenant_scope(world.tenant_a):
        events = list(UsageEvent.objects.order_by("pk"))
    assert [event_cost(event) for event in events] == [Decimal("0.3216"), Decimal("2.4")]
    assert events_total_cost(events) == Decimal("2.7216")
