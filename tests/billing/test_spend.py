"""Live spend caps: the guard loaded from the database, driving the real bridge."""

import asyncio
import json
from decimal import Decimal

from django.utils import timezone

from agents.realtime.bridge import CLOSE_BUDGET_EXHAUSTED, RealtimeBridge, UsageRecord
from agents.realtime.policy import SessionPolicy
from billing.models import TenantPlan
from billing.services import spend_cap_set
from billing.spend import spend_guard_for
from tenants import services as tenant_services
from tenants.models import Tenant
from tenants.scoping import tenant_scope
from tests.agents.fakes import FakeClient, FakeUpstream
from tests.billing.conftest import record, usage
from tests.waiting import until


def agent_of(agent):
    return {"agent_id": agent.pk, "model": agent.model, "provider": agent.provider}


class ListRecorder:
    """Keeps the usage records; ignores the rest (whatever its arguments)."""

    def __init__(self):
        self.usages = []

    def record_usage(self, record):
        self.usages.append(record)

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def set_budget(tenant, amount):
    Tenant.objects.filter(pk=tenant.pk).update(monthly_budget_usd=amount)


def response_done(response_id, **counts):
    return {
        "type": "response.done",
        "response": {"id": response_id, "status": "completed", "usage": usage(**counts)},
    }


async def settle():
    for _ in range(10):
        await asyncio.sleep(0)


async def started_bridge(guard, channel):
    """The real bridge with ``guard``, between fakes: (bridge, upstream, client, recorder)."""
    upstream, client, recorder = FakeUpstream(), FakeClient(), ListRecorder()

    async def connect():
        return upstream

    policy = SessionPolicy(agent_id=1, kind="voice_agent", model="gpt-realtime-2",
                           channel=channel, instructions="")  # fmt: skip
    bridge = RealtimeBridge(policy=policy, client=client, connect_upstream=connect,
                            recorder=recorder, spend_guard=guard)  # fmt: skip
    await bridge.start()
    return bridge, upstream, client, recorder


async def conversation(guard, responses):
    """The client asks for a response after each one; the upstream answers with ``responses``."""
    bridge, upstream, client, recorder = await started_bridge(guard, "widget")
    for done in responses:
        await bridge.from_client(json.dumps({"type": "response.create"}))
        upstream.push(done)
        await settle()
    # After the session ended, nothing reaches the upstream any more.
    await bridge.from_client(json.dumps({"type": "response.create"}))
    await asyncio.wait_for(bridge.wait_closed(), 2)
    return bridge, upstream, client, recorder


def test_a_session_crossing_the_budget_stops_is_told_why_and_overshoots_by_one_response(
    world, agents_a
):
    support = agents_a["support"]
    # $1.00 budget; $0.36 already spent this month (5,625 audio out × $64 / 1M).
    record(world.tenant_a, support, "earlier", timezone.now(), audio_out=5_625)
    set_budget(world.tenant_a, Decimal("1.00"))
    guard = spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(support))
    assert guard.allowances[0].remaining == Decimal("0.64")
    responses = [
        response_done("r1", audio_out=5_000),  # $0.32: $0.32 left
        response_done("r2", audio_out=6_000),  # $0.384, in flight when the cap is crossed
        response_done("r3", audio_out=6_000),  # never asked for
    ]
    bridge, upstream, client, recorder = asyncio.run(conversation(guard, responses))
    assert [usage.key for usage in recorder.usages] == ["r1", "r2"]  # both billed
    assert upstream.received_types() == ["session.update", "response.create", "response.create"]
    assert client.errors() == ["budget_exhausted"]
    assert client.closed == (CLOSE_BUDGET_EXHAUSTED, "budget_exhausted")
    assert bridge.end_reason == "budget_exhausted"
    assert upstream.closed
    overshoot = -guard.allowances[0].remaining
    assert overshoot == Decimal("0.064")
    assert Decimal(0) < overshoot <= Decimal("0.384")  # at most the response in flight
    assert guard.spent == Decimal("0.704")


def test_no_guard_without_caps_and_a_spent_budget_refuses_at_once(world, agents_a):
    support = agents_a["support"]
    assert spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(support)) is None
    record(world.tenant_a, support, "earlier", timezone.now(), audio_out=1_000_000)  # $64
    set_budget(world.tenant_a, Decimal("64.00"))
    guard = spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(support))
    assert not guard.allows_response()
    assert guard.exhausted == ["monthly budget"]


def test_the_guard_counts_billed_amounts_under_the_plan(world, agents_a):
    support = agents_a["support"]
    with tenant_scope(world.tenant_a):
        TenantPlan.objects.create(tenant=world.tenant_a, markup_percent=25)
    set_budget(world.tenant_a, Decimal("1.00"))
    guard = spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(support))
    # 10,000 audio out = $0.64 provider cost, $0.80 billed: $0.20 left.
    assert guard.on_usage(UsageRecord(key="r", model="gpt-realtime-2",
                                      usage=usage(audio_out=10_000)))  # fmt: skip
    assert guard.allowances[0].remaining == Decimal("0.20")


def test_agent_and_widget_key_daily_caps(world, agents_a):
    support, faq = agents_a["support"], agents_a["faq"]
    widget_key = tenant_services.widget_key_create(
        tenant=world.tenant_a, name="Shop", allowed_origins=["https://shop.example"]
    )
    spend_cap_set(tenant_id=world.tenant_a.pk, agent_id=support.pk, daily_limit_usd=Decimal("2"))
    spend_cap_set(tenant_id=world.tenant_a.pk, widget_key_id=widget_key.pk,
                  daily_limit_usd=Decimal("0.50"))  # fmt: skip
    now = timezone.now()
    record(world.tenant_a, support, "a1", now, audio_out=15_625)  # $1.00 of support today
    record(world.tenant_a, faq, "w1", now, widget_key=widget_key, audio_out=125_000)  # $0.30
    guard = spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(support),
                            widget_key_id=widget_key.pk)  # fmt: skip
    assert {a.label: a.remaining for a in guard.allowances} == {
        "agent daily cap": Decimal("1.00"),
        "widget key daily cap": Decimal("0.20"),
    }
    # FAQ has no cap of its own; through another widget key nothing applies.
    assert spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(faq)) is None
    # $0.256 crosses the widget key's cap first.
    assert not guard.on_usage(UsageRecord(key="r", model="gpt-realtime-2",
                                          usage=usage(audio_out=4_000)))  # fmt: skip
    assert guard.exhausted == ["widget key daily cap"]
    spend_cap_set(tenant_id=world.tenant_a.pk, agent_id=support.pk, daily_limit_usd=None)
    spend_cap_set(tenant_id=world.tenant_a.pk, widget_key_id=widget_key.pk, daily_limit_usd=None)
    assert spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(support),
                           widget_key_id=widget_key.pk) is None  # fmt: skip


def test_local_engine_sessions_spend_nothing(world):
    from agents.configuration import agent_create

    local = agent_create(tenant=world.tenant_a, actor=None,
                         fields={"name": "Offline", "provider": "local"})  # fmt: skip
    set_budget(world.tenant_a, Decimal("0.01"))
    guard = spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(local))
    assert guard.on_usage(UsageRecord(key="r", model=local.model,
                                      usage=usage(audio_out=10_000_000)))  # fmt: skip
    assert guard.spent == 0


def test_a_repeated_response_done_is_taken_off_once(world, agents_a):
    support = agents_a["support"]
    set_budget(world.tenant_a, Decimal("1.00"))
    guard = spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(support))
    done = response_done("r1", audio_out=5_000)  # $0.32

    async def duplicated():
        bridge, upstream, _, recorder = await started_bridge(guard, "api")
        await bridge.from_client(json.dumps({"type": "response.create"}))
        upstream.push(done)
        upstream.push(done)  # delivered twice (a retried relay, a replayed journal)
        await until(lambda: len(recorder.usages) == 2, "both response.done")
        assert not bridge.closed.is_set()
        await bridge.close("client_closed")

    asyncio.run(duplicated())
    assert guard.spent == Decimal("0.32")
    assert guard.allowances[0].remaining == Decimal("0.68")
    # The same key through the guard directly: still once.
    record_r1 = UsageRecord(key="r1", model="gpt-realtime-2", usage=usage(audio_out=5_000))
    assert guard.on_usage(record_r1)
    assert guard.spent == Decimal("0.32")


def test_a_session_opened_after_the_daily_cap_was_crossed_gets_no_answer(world, agents_a):
    """The guard read at connect finds the agent's cap spent: the session ends before an
    upstream opens, so server VAD cannot start one more billed answer."""
    support = agents_a["support"]
    spend_cap_set(tenant_id=world.tenant_a.pk, agent_id=support.pk, daily_limit_usd=Decimal("1"))
    record(world.tenant_a, support, "earlier", timezone.now(), audio_out=15_625)  # $1.00
    guard = spend_guard_for(tenant_id=world.tenant_a.pk, **agent_of(support))
    assert guard.exhausted == ["agent daily cap"]

    async def vad_session():
        upstream, client, recorder = FakeUpstream(), FakeClient(), ListRecorder()
        for event in (
            {"type": "input_audio_buffer.speech_started", "item_id": "i1"},
            {"type": "response.created", "response": {"id": "resp_vad"}},
            response_done("resp_vad", audio_out=5_000),
        ):
            upstream.push(event)
        opened = []

        async def connect():
            opened.append(upstream)
            return upstream

        policy = SessionPolicy(agent_id=support.pk, kind="voice_agent", model="gpt-realtime-2",
                               channel="widget", instructions="")  # fmt: skip
        bridge = RealtimeBridge(policy=policy, client=client, connect_upstream=connect,
                                recorder=recorder, spend_guard=guard)  # fmt: skip
        started = await bridge.start()
        await asyncio.wait_for(bridge.wait_closed(), 2)
        return started, opened, client, recorder

    started, opened, client, recorder = asyncio.run(vad_session())
    assert (started, opened) == (False, [])
    assert [event["type"] for event in client.events()] == ["error"]
    assert client.closed == (CLOSE_BUDGET_EXHAUSTED, "budget_exhausted")
    assert recorder.usages == []
    assert guard.spent == 0
