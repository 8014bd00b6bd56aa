"""Drafts and published versions at the service level: what each door's session runs.

Editing an agent changes its draft only; every socket (widget, API, client secret, phone) runs
the live version, or the version its widget key, phone number or ``?version=`` pins; only the
console's Try-it runs the draft, on its own channel. The same against real servers and a real
upstream: tests/platform/test_drafts.py; in Chromium: tests/browser/test_drafts.py.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from agents import access, tokens
from agents.configuration import (
    agent_create,
    agent_publish,
    agent_rollback,
    agent_update,
    draft_changes,
)
from agents.models import Agent, AgentVersion, Session
from agents.selectors import policy_for_agent
from agents.services import session_start
from agents.telephony_views import phone_call_token_mint, phone_number_create
from tenants import services as tenant_services
from tenants.models import AuditEvent, ClientToken
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import ServiceError

SHOP = "https://shop.example"


@pytest.fixture
def agent(world) -> Agent:
    """v1 "Be brief." live, v2 "Be kind." live, draft "Be bold." (unpublished)."""
    agent = agent_create(
        tenant=world.tenant_a, actor=world.owner_a,
        fields={"name": "Support", "provider": "local", "instructions": "Be brief."},
    )  # fmt: skip
    agent_update(agent=agent, actor=world.owner_a, fields={"instructions": "Be kind."})
    agent_publish(agent, world.owner_a)
    agent_update(agent=agent, actor=world.owner_a, fields={"instructions": "Be bold."})
    agent.refresh_from_db()
    return agent


def widget_access(world, agent, *, version_number=None) -> access.Access:
    key = tenant_services.widget_key_create(
        tenant=world.tenant_a, name="w", allowed_origins=[SHOP], agent=agent,
        version_number=version_number,
    )  # fmt: skip
    minted = tokens.widget_token_mint(key=key.key, origin=SHOP)
    return access.widget_socket_access(
        offered=[f"vp-token.{minted.value}"], origin=SHOP, client_ip="1.2.3.4"
    )


def api_access(world, agent, **query) -> access.Access:
    _, raw = tenant_services.api_key_issue(tenant=world.tenant_a, name="backend")
    return access.api_socket_access(
        authorization=f"Bearer {raw}", offered=[], beta="", translations=False,
        query={"agent": str(agent.pk), **query},
    )  # fmt: skip


def instructions(found: access.Access) -> str:
    return policy_for_agent(agent=found.agent, channel="api").instructions


def test_an_edit_changes_the_draft_not_what_sessions_run(world, agent):
    with tenant_scope(world.tenant_a):
        assert AgentVersion.objects.filter(agent=agent).count() == 2
    assert agent.instructions == "Be bold."  # the row is the draft
    assert draft_changes(agent) == {"instructions": ("Be kind.", "Be bold.")}
    for found in (widget_access(world, agent), api_access(world, agent)):
        assert instructions(found) == "Be kind."
        assert found.agent.running_version == agent.live_version
    with pytest.raises(ValueError, match="read-only"):
        found.agent.save()  # a version's copy never overwrites the draft
    with tenant_scope(world.tenant_a):
        event = AuditEvent.objects.filter(action="agent.updated").latest("pk")
    assert event.changes == {"draft": True, "fields": ["instructions"]}


def test_a_session_records_the_version_and_model_it_runs(world, agent):
    agent_update(agent=agent, actor=world.owner_a, fields={"model": "gpt-realtime-mini"})
    found = api_access(world, agent)
    session = session_start(
        tenant=world.tenant_a, agent=found.agent, channel="api", end_user=found.end_user
    )
    assert (session.agent_version_id, session.model) == (agent.live_version_id, "gpt-realtime-2")


def test_publish_snapshots_the_draft_once_and_audits_it(world, agent):
    version = agent_publish(agent, world.owner_a, note="bolder")
    assert (version.number, version.note, version.config["instructions"]) == (
        3,
        "bolder",
        "Be bold.",
    )
    assert agent.live_version == version and draft_changes(agent) == {}
    assert agent_publish(agent, world.owner_a) == version  # nothing new to publish
    with tenant_scope(world.tenant_a):
        assert AgentVersion.objects.filter(agent=agent).count() == 3
        event = AuditEvent.objects.filter(action="agent.published").latest("pk")
    assert event.changes == {"version": 3, "from_version": 2, "fields": ["instructions"]}
    assert instructions(widget_access(world, agent)) == "Be bold."


def test_rollback_publishes_an_older_version_and_resets_the_draft(world, agent):
    with tenant_scope(world.tenant_a):
        first = AgentVersion.objects.get(agent=agent, number=1)
    agent_rollback(agent=agent, version=first, actor=world.owner_a)
    agent.refresh_from_db()
    assert (agent.live_version_id, agent.instructions) == (first.pk, "Be brief.")
    assert instructions(api_access(world, agent)) == "Be brief."
    with tenant_scope(world.tenant_a):
        event = AuditEvent.objects.filter(action="agent.rolled_back").latest("pk")
        assert AgentVersion.objects.filter(agent=agent).count() == 2  # history unchanged
    assert event.changes == {
        "from_version": 2, "to_version": 1, "discarded_draft_fields": ["instructions"],
    }  # fmt: skip
    assert agent_publish(agent, None, 2).number == 2  # by number, as the REST API does
    assert instructions(api_access(world, agent)) == "Be kind."


def test_publish_refuses_a_version_of_another_agent_or_none(world, agent):
    other = agent_create(tenant=world.tenant_a, actor=None, fields={"name": "Other"})
    with pytest.raises(ValidationError, match="another agent"):
        agent_publish(agent, None, other.live_version)
    with pytest.raises(ValidationError, match="no version 9"):
        agent_publish(agent, None, 9)


def test_a_widget_key_can_pin_a_version(world, agent):
    assert instructions(widget_access(world, agent, version_number=1)) == "Be brief."
    agent_publish(agent, world.owner_a)  # v3 is live: the pinned key stays on v1
    assert instructions(widget_access(world, agent, version_number=1)) == "Be brief."
    assert instructions(widget_access(world, agent)) == "Be bold."
    with pytest.raises(ServiceError, match="has no version 7"):
        widget_access(world, agent, version_number=7)
    with pytest.raises(ServiceError, match="Choose an agent"):
        tenant_services.widget_key_create(
            tenant=world.tenant_a, name="any", allowed_origins=[SHOP], version_number=1
        )
    key = tenant_services.widget_key_create(
        tenant=world.tenant_a, name="k", allowed_origins=[SHOP], agent=agent
    )
    tenant_services.widget_key_pin(widget_key=key, version_number=2)
    minted = tokens.widget_token_mint(key=key.key, origin=SHOP)
    assert minted.agent.instructions == "Be kind."  # what the widget is told (notice etc.)


def test_the_api_socket_and_client_secrets_can_pin_a_version(world, agent):
    assert instructions(api_access(world, agent, version="1")) == "Be brief."
    with pytest.raises(access.AccessDenied) as missing:
        api_access(world, agent, version="5")
    assert (missing.value.code, missing.value.status, missing.value.close_code) == (
        "version_not_found", 404, 4404,
    )  # fmt: skip
    with pytest.raises(access.AccessDenied) as bad:
        api_access(world, agent, version="latest")
    assert (bad.value.code, bad.value.status) == ("invalid_version", 400)
    api_key, raw = tenant_services.api_key_issue(tenant=world.tenant_a, name="minting")
    minted = tokens.ephemeral_key_mint(api_key=api_key, agent_id=agent.pk, version=1)
    found = access.api_socket_access(
        authorization=f"Bearer {minted.value}", offered=[], beta="", query={}, translations=False
    )
    assert instructions(found) == "Be brief."
    live = tokens.ephemeral_key_mint(api_key=api_key, agent_id=agent.pk)
    found = access.widget_socket_access(
        offered=[f"openai-insecure-api-key.{live.value}"], origin=SHOP, client_ip="1.2.3.4"
    )
    assert (instructions(found), found.console) == ("Be kind.", False)


def test_a_phone_number_can_pin_a_version(world, agent):
    with tenant_scope(world.tenant_a):
        first = AgentVersion.objects.get(agent=agent, number=1)
    pinned = phone_number_create(
        tenant=world.tenant_a, number="+14155550100", agent=agent, auth_token="t" * 32,
        actor=world.owner_a, version=first,
    )  # fmt: skip
    live = phone_number_create(
        tenant=world.tenant_a, number="+14155550101", agent=agent, auth_token="t" * 32,
        actor=world.owner_a,
    )  # fmt: skip
    for number, expected in ((pinned, "Be brief."), (live, "Be kind.")):
        minted = phone_call_token_mint(phone_number=number, caller="+14155550999")
        assert instructions(access.phone_stream_access(raw_token=minted.value)) == expected


def test_try_it_runs_the_draft_on_the_console_channel(world, agent):
    minted = tokens.console_token_mint(agent=agent, end_user=f"console:{world.owner_a.pk}")
    found = access.widget_socket_access(
        offered=[f"openai-insecure-api-key.{minted.value}"], origin=None, client_ip="1.2.3.4"
    )
    assert (instructions(found), found.console, found.widget_key_id) == ("Be bold.", True, None)
    session = session_start(
        tenant=world.tenant_a, agent=found.agent, channel=Session.Channel.CONSOLE,
        end_user=found.end_user,
    )  # fmt: skip
    assert (session.channel, session.agent_version_id) == ("console", None)
    # A console token opens the console's door only: not the API socket.
    again = tokens.console_token_mint(agent=agent, end_user="console:again")
    with pytest.raises(access.AccessDenied) as refused:
        access.api_socket_access(
            authorization=f"Bearer {again.value}", offered=[], beta="", query={},
            translations=False,
        )  # fmt: skip
    assert refused.value.code == "token_invalid"
    with scopes_disabled():
        assert ClientToken.objects.get(end_user="console:again").kind == "console"


def test_console_sessions_do_not_use_the_widget_share(world, agent):
    """The widget's share of concurrent sessions counts widget sessions only."""
    from tenants.models import Tenant

    Tenant.objects.filter(pk=world.tenant_a.pk).update(
        max_concurrent_sessions=4, widget_share_percent=25
    )
    world.tenant_a.refresh_from_db()
    assert world.tenant_a.widget_session_limit == 1
    session_start(tenant=world.tenant_a, agent=agent, channel="console", end_user="c")
    found = widget_access(world, agent)  # admitted: the console session is not widget usage
    session_start(
        tenant=world.tenant_a, agent=found.agent, channel="widget", end_user=found.end_user,
        widget_key_id=found.widget_key_id,
    )  # fmt: skip
    with pytest.raises(access.AccessDenied) as refused:
        session_start(tenant=world.tenant_a, agent=agent, channel="widget", end_user="w")
    assert refused.value.code == "too_many_widget_sessions"


def test_console_usage_is_billed_as_console_never_as_widget_usage(world, client, agent):
    """Try-it spends the tenant's OpenAI key: billed like any session, counted in the tenant's
    budget, shown apart as console usage on the usage page, never against a widget key."""
    from decimal import Decimal

    from django.utils import timezone

    from billing.selectors import tenant_day_spend, usage_summary
    from billing.services import tally_sweep
    from tests.billing.conftest import record

    key = tenant_services.widget_key_create(
        tenant=world.tenant_a, name="w", allowed_origins=[SHOP], agent=agent
    )
    tried = session_start(tenant=world.tenant_a, agent=agent, channel="console", end_user="c")
    served = session_start(
        tenant=world.tenant_a, agent=agent, channel="widget", end_user="w", widget_key_id=key.pk
    )
    now = timezone.now()
    today = now.date()  # UTC
    record(world.tenant_a, agent, "r_console", now, session=tried, audio_out=1_000_000)
    record(world.tenant_a, agent, "r_widget", now, session=served, widget_key=key,
           audio_in=1_000_000)  # fmt: skip
    tally_sweep()
    summary = usage_summary(tenant_id=world.tenant_a.pk, start=today, end=today)
    assert summary.console_cost == Decimal("64") and summary.cost == Decimal("96")
    assert tenant_day_spend(tenant_id=world.tenant_a.pk, widget_key_id=key.pk) == Decimal("32")
    client.force_login(world.owner_a)
    page = client.get(f"/t/tenant-a/usage/?start={today}&end={today}").content.decode()
    stat = page[page.index('id="console-usage"') :][:200]
    assert "$64.00" in stat and "console Try-it" in stat


def test_client_secrets_pin_a_version_over_http(client, world, agent):
    _, raw = tenant_services.api_key_issue(tenant=world.tenant_a, name="backend")
    headers = {"Authorization": f"Bearer {raw}"}

    def mint(body: dict, query: str = ""):
        return client.post(
            f"/v1/realtime/client_secrets{query}", body, content_type="application/json",
            headers=headers,
        )  # fmt: skip

    pinned = mint({"agent": agent.pk, "version": 1})
    assert pinned.status_code == 200 and pinned.json()["session"]["instructions"] == "Be brief."
    live = mint({}, f"?agent={agent.pk}")
    assert live.json()["session"]["instructions"] == "Be kind."
    assert mint({}, f"?agent={agent.pk}&version=1").json()["session"]["instructions"] == (
        "Be brief."
    )
    missing = mint({"agent": agent.pk, "version": 9})
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "type": "not_found_error", "param": None,
        "code": "version_not_found", "message": f"agent {agent.pk} has no version 9",
    }  # fmt: skip
