"""The tenant console: pages by role, forms, versions, members, audit, sessions."""

import html
import json
import re

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.urls import reverse

from agents.configuration import agent_create, agent_update
from agents.models import Agent, AgentVersion, Session, TranscriptItem
from agents.services import session_group
from billing.models import UsageEvent
from tenants import services
from tenants.models import AuditEvent, Membership, Role
from tenants.scoping import scopes_disabled, tenant_scope

ROLES = ["owner", "admin", "finance", "viewer"]


@pytest.fixture
def console(world):
    agent = agent_create(
        tenant=world.tenant_a,
        actor=world.owner_a,
        fields={"name": "Support", "provider": "local", "instructions": "Be kind."},
    )
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(
            tenant=world.tenant_a, agent=agent, agent_version=agent.live_version,
            channel="widget", model="gpt-realtime-2",
        )  # fmt: skip
        TranscriptItem.objects.create(
            tenant=world.tenant_a, session=session, sequence=0, upstream_item_id="i1",
            role="user", text="where is my order",
        )  # fmt: skip
        TranscriptItem.objects.create(
            tenant=world.tenant_a, session=session, sequence=1, upstream_item_id="i2",
            role="assistant", kind="function_call", text="lookup_order",
            data={"name": "lookup_order", "arguments": '{"order_number": "123"}'},
        )  # fmt: skip
        UsageEvent.objects.create(
            tenant=world.tenant_a, session=session, agent=agent, model="gpt-realtime-2",
            upstream_response_id="resp_1", input_audio_tokens=1000, output_audio_tokens=500,
            occurred_at=session.started_at,
        )  # fmt: skip
    api_key, _ = services.api_key_issue(tenant=world.tenant_a, name="A backend")
    widget_key = services.widget_key_create(
        tenant=world.tenant_a, name="A widget", allowed_origins=["http://testserver"], agent=agent
    )
    return {"agent": agent, "session": session, "api_key": api_key, "widget_key": widget_key}


def user_with_role(world, role):
    if role == "owner":
        return world.owner_a
    user = services.user_get_or_create(email=f"{role}-a@example.com", password=world.password)
    services.membership_set(tenant=world.tenant_a, user=user, role=role)
    return user


def page_urls(console, membership_id):
    agent, version = console["agent"], console["agent"].live_version
    args = ["tenant-a"]
    return [
        reverse("tenant-dashboard", args=args),
        reverse("agent-list", args=args),
        reverse("agent-list", args=args) + "?show=archived",
        reverse("agent-edit", args=[*args, agent.pk]),
        reverse("agent-versions", args=[*args, agent.pk]),
        reverse("agent-versions", args=[*args, agent.pk])
        + f"?a={version.number}&b={version.number}",
        reverse("agent-tools", args=[*args, agent.pk]),
        reverse("agent-try", args=[*args, agent.pk]),
        reverse("session-list", args=args),
        reverse("session-list", args=args)
        + f"?agent={agent.pk}&channel=widget&end_reason=in_progress",
        reverse("session-detail", args=[*args, console["session"].pk]),
        reverse("widget-key-list", args=args),
        reverse("widget-key-detail", args=[*args, console["widget_key"].pk]),
        reverse("api-key-list", args=args),
        reverse("credentials", args=args),
        reverse("member-list", args=args),
        reverse("audit-log", args=args),
        reverse("data-retention", args=args),
    ]


@pytest.mark.parametrize("role", ROLES)
def test_every_page_renders_for_every_role(client, world, console, role):
    user = user_with_role(world, role)
    client.force_login(user)
    with tenant_scope(world.tenant_a):
        membership_id = Membership.objects.get(user=user).pk
    # The agent's instructions are shown on its own page and on no other.
    agent_page = reverse("agent-edit", args=["tenant-a", console["agent"].pk])
    for url in page_urls(console, membership_id):
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"Traceback" not in response.content
        assert (b"Be kind." in response.content) == (url == agent_page), url


def test_agent_create_page_is_for_configurers_only(client, world, console):
    for role, expected in [("owner", 200), ("admin", 200), ("finance", 403), ("viewer", 403)]:
        client.force_login(user_with_role(world, role))
        assert client.get(reverse("agent-create", args=["tenant-a"])).status_code == expected


AGENT_FORM = {
    "name": "Sales", "kind": "voice_agent", "provider": "local", "model": "gpt-realtime-2",
    "voice": "cedar", "instructions": "Sell kindly.", "reasoning_effort": "low",
    "turn_detection": "server_vad", "vad_eagerness": "auto", "input_audio_format": "audio/pcm",
    "output_audio_format": "audio/pcm", "max_output_tokens": "", "target_language": "",
}  # fmt: skip


def test_create_edit_publish_and_roll_back_an_agent(client, world, console):
    client.force_login(world.owner_a)
    response = client.post(reverse("agent-create", args=["tenant-a"]), AGENT_FORM)
    assert response.status_code == 302
    with tenant_scope(world.tenant_a):
        agent = Agent.objects.get(name="Sales")
    assert agent.live_version.number == 1
    edit_url = reverse("agent-edit", args=["tenant-a", agent.pk])
    response = client.post(edit_url, {**AGENT_FORM, "voice": "marin", "instructions": "Sell."})
    assert response.status_code == 302
    agent.refresh_from_db()
    # Saved to the draft: the live version is still v1, the page shows the difference.
    assert (agent.voice, agent.instructions, agent.live_version.number) == ("marin", "Sell.", 1)
    page = html.unescape(client.get(edit_url).content.decode())
    draft = page[
        page.index('id="draft-changes"') : page.index(
            "</section>", page.index('id="draft-changes"')
        )
    ]
    assert "Unpublished changes" in draft and "<code>voice</code>" in draft
    assert "<del>Sell kindly.</del>" in draft and "<ins>Sell.</ins>" in draft
    assert "<code>name</code>" not in draft
    client.post(reverse("agent-publish", args=["tenant-a", agent.pk]), {"note": "shorter"})
    agent.refresh_from_db()
    assert (agent.live_version.number, agent.live_version.note) == (2, "shorter")
    assert 'id="draft-changes"' not in client.get(edit_url).content.decode()
    # Saving the same values again changes nothing; publishing again makes no new version.
    client.post(edit_url, {**AGENT_FORM, "voice": "marin", "instructions": "Sell."})
    client.post(reverse("agent-publish", args=["tenant-a", agent.pk]))
    with tenant_scope(world.tenant_a):
        assert AgentVersion.objects.filter(agent=agent).count() == 2
        first = AgentVersion.objects.get(agent=agent, number=1)
    diff = client.get(reverse("agent-versions", args=["tenant-a", agent.pk]) + "?a=1&b=2")
    assert b"<code>voice</code>" in diff.content and b"<code>instructions</code>" in diff.content
    assert b"<code>name</code>" not in diff.content
    client.post(reverse("agent-rollback", args=["tenant-a", agent.pk, first.pk]))
    agent.refresh_from_db()
    assert (agent.voice, agent.instructions, agent.live_version_id) == (
        "cedar",
        "Sell kindly.",
        first.pk,
    )
    with tenant_scope(world.tenant_a):
        actions = list(
            AuditEvent.objects.filter(target_type="agent", target_id=str(agent.pk))
            .order_by("pk")
            .values_list("action", flat=True)
        )
    assert actions == ["agent.created", "agent.updated", "agent.published", "agent.rolled_back"]


def test_session_records_the_version_it_runs(world, console):
    from agents.access import agent_runtime
    from agents.configuration import agent_publish
    from agents.services import session_start

    agent = console["agent"]
    agent_update(agent=agent, actor=world.owner_a, fields={"voice": "sage"})
    version = agent_publish(agent, world.owner_a)
    agent.refresh_from_db()
    session = session_start(
        tenant=world.tenant_a, agent=agent_runtime(agent), channel="api", end_user="u"
    )
    assert (session.agent_version_id, session.model) == (version.pk, agent.model)
    agent_update(agent=agent, actor=world.owner_a, fields={"voice": "cedar"})
    tried = session_start(
        tenant=world.tenant_a, agent=agent_runtime(agent, draft=True), channel="console",
        end_user="u",
    )  # fmt: skip
    assert tried.agent_version_id is None  # it ran the draft


def test_form_errors_appear_next_to_the_field(client, world, console):
    client.force_login(world.owner_a)
    url = reverse("agent-create", args=["tenant-a"])
    response = client.post(url, {**AGENT_FORM, "model": "gpt-realtime-whisper"})
    assert response.status_code == 200
    field = re.search(
        rb'<div class="field has-error" id="field-model">.*?</div>\s*</div>', response.content, re.S
    )
    assert (
        field
        and b"A voice agent uses gpt-realtime-2, gpt-realtime-mini, gpt-realtime" in field.group(0)
    )
    response = client.post(
        url, {**AGENT_FORM, "kind": "translation", "model": "gpt-realtime-translate"}
    )
    assert b'id="field-target_language"' in response.content
    assert b"Choose the language to translate into." in response.content
    with tenant_scope(world.tenant_a):
        assert not Agent.objects.filter(name="Sales").exists()


@pytest.mark.parametrize("role", ["finance", "viewer"])
def test_finance_and_viewer_cannot_change_agents(client, world, console, role):
    client.force_login(user_with_role(world, role))
    agent = console["agent"]
    before = (agent.name, agent.live_version_id)
    args = ["tenant-a", agent.pk]
    assert (
        client.post(reverse("agent-edit", args=args), {**AGENT_FORM, "name": "X"}).status_code
        == 403
    )
    for name in ("agent-duplicate", "agent-archive"):
        assert client.post(reverse(name, args=args)).status_code == 403
    tool = {
        "form": "tool",
        "name": "t",
        "parameters": "{}",
        "execution": "client",
        "timeout_seconds": 5,
    }
    assert client.post(reverse("agent-tools", args=args), tool).status_code == 403
    agent.refresh_from_db()
    assert (agent.name, agent.live_version_id, agent.tools, agent.status) == (*before, [], "active")
    with tenant_scope(world.tenant_a):
        assert Agent.objects.count() == 1


def test_tools_validate_schema_and_mcp_authorization_is_encrypted(client, world, console):
    client.force_login(world.owner_a)
    agent = console["agent"]
    url = reverse("agent-tools", args=["tenant-a", agent.pk])
    bad = {
        "form": "tool",
        "name": "lookup_order",
        "parameters": '{"type": "object", "properties": 3}',
        "execution": "webhook",
        "webhook_url": "https://hooks.example/order",
        "timeout_seconds": 5,
    }
    response = client.post(url, bad)
    assert b"Not a valid JSON Schema" in response.content
    response = client.post(url, {**bad, "parameters": "{not json"})
    assert b"Not valid JSON" in response.content
    good_schema = {"type": "object", "properties": {"order_number": {"type": "string"}}}
    response = client.post(url, {**bad, "parameters": json.dumps(good_schema)})
    assert response.status_code == 302
    response = client.post(url, {"form": "mcp", "label": "crm", "url": "http://insecure.example"})
    assert b"https://" in response.content
    response = client.post(
        url, {"form": "mcp", "label": "crm", "url": "https://mcp.example/sse",
              "allowed_tools": "search, fetch", "authorization": "Bearer secret-token-1234"},
    )  # fmt: skip
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.tools[0]["parameters"] == good_schema
    assert agent.tools[0]["webhook_url"] == "https://hooks.example/order"
    server = agent.mcp_servers[0]
    assert server["allowed_tools"] == ["search", "fetch"]
    assert "secret-token-1234" not in json.dumps(agent.mcp_servers)
    assert server["authorization_masked"] == "…1234"
    page = client.get(url)
    assert b"secret-token-1234" not in page.content
    with tenant_scope(world.tenant_a):  # tools go to the draft: no version until published
        assert AgentVersion.objects.filter(agent=agent).count() == 1
    assert "<code>tools</code>" in page.content.decode()  # shown as an unpublished change


def test_members_invite_accept_roles_and_last_owner(client, world, console):
    client.force_login(world.owner_a)
    url = reverse("member-list", args=["tenant-a"])
    response = client.post(url, {"email": "new@example.com", "role": "finance"})
    link = response.context["invitation_link"]
    assert link.startswith("http://testserver/invitations/#vp_inv_")
    client.logout()
    path, token = link.removeprefix("http://testserver").split("#")
    # The page's script posts the fragment's token; the page then shows the invitation.
    response = client.post(path, {"token": token})
    assert response.status_code == 302 and response["Location"] == "/invitations/"
    assert b"Join Tenant A" in client.get(path).content
    response = client.post(path, {"password": "a-long-password-1"})
    assert response.status_code == 302
    with tenant_scope(world.tenant_a):
        member = Membership.objects.get(user__username="new@example.com")
    assert member.role == Role.FINANCE
    assert client.post(path, {"token": token}).status_code == 404  # used once
    client.force_login(world.owner_a)
    with tenant_scope(world.tenant_a):
        owner_membership = Membership.objects.get(user=world.owner_a)
    response = client.post(
        reverse("member-role", args=["tenant-a", owner_membership.pk]),
        {"role": "viewer"},
        follow=True,
    )
    assert b"at least one owner" in response.content
    response = client.post(
        reverse("member-remove", args=["tenant-a", owner_membership.pk]), follow=True
    )
    assert b"at least one owner" in response.content
    with tenant_scope(world.tenant_a):
        assert Membership.objects.get(user=world.owner_a).role == Role.OWNER
        actions = list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))
    assert "member.invited" in actions and "member.joined" in actions


def test_audit_page_lists_changes(client, world, console):
    client.force_login(world.owner_a)
    services.provider_credential_set(
        tenant=world.tenant_a, secret="sk-" + "a" * 40, actor=world.owner_a
    )
    page = client.get(reverse("audit-log", args=["tenant-a"]))
    for action in (b"agent.created", b"api_key.issued", b"widget_key.created", b"credential.set"):
        assert action in page.content
    assert b"sk-aaaa" not in page.content


def test_session_page_shows_transcript_tokens_and_cost(client, world, console):
    client.force_login(world.owner_a)
    page = client.get(reverse("session-detail", args=["tenant-a", console["session"].pk]))
    content = page.content.decode()
    assert content.index("where is my order") < content.index("lookup_order(")
    # 1000 audio in at $32/M + 500 audio out at $64/M = $0.064; the local engine would be $0.
    assert "$0.064000" in content
    assert "/ws/console/t/tenant-a/sessions/" in content


def test_admin_can_end_a_session_through_the_channel_layer(client, world, console):
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(session_group(console["session"].pk), channel)
    client.force_login(world.owner_a)
    client.post(reverse("session-end", args=["tenant-a", console["session"].pk]))
    message = async_to_sync(layer.receive)(channel)
    assert message == {"type": "session.end_requested", "reason": "ended_by_admin", "message": ""}
    client.force_login(user_with_role(world, "viewer"))
    assert (
        client.post(reverse("session-end", args=["tenant-a", console["session"].pk])).status_code
        == 403
    )


def test_try_it_token_opens_the_widget_socket_on_the_console_channel(client, world, console):
    client.force_login(user_with_role(world, "admin"))
    response = client.post(reverse("agent-try-token", args=["tenant-a", console["agent"].pk]))
    assert response.status_code == 201
    body = response.json()
    assert body["token"].startswith("vp_ek_") and body["subprotocol"] == "openai-insecure-api-key"
    with scopes_disabled():
        from tenants.models import ClientToken

        token = ClientToken.objects.get()
    assert (token.agent_id, token.end_user, token.kind) == (
        console["agent"].pk,
        f"console:{response.wsgi_request.user.pk}",
        "console",
    )


@pytest.mark.parametrize("role", ["finance", "viewer"])
def test_finance_and_viewer_cannot_start_a_try_it(client, world, console, role):
    client.force_login(user_with_role(world, role))
    args = ["tenant-a", console["agent"].pk]
    response = client.post(reverse("agent-try-token", args=args))
    assert response.status_code == 403
    assert "Only owners and admins can try agents" in response.json()["error"]["message"]
    page = client.get(reverse("agent-try", args=args)).content.decode()
    assert 'id="try-forbidden"' in page and "voiceplatform-widget.js" not in page
    edit = client.get(reverse("agent-edit", args=args)).content.decode()
    assert reverse("agent-try", args=args) not in edit  # no tab, no link
    with scopes_disabled():
        from tenants.models import ClientToken

        assert not ClientToken.objects.exists()


def test_widget_key_page_shows_snippet_and_edits_origins(client, world, console):
    client.force_login(world.owner_a)
    url = reverse("widget-key-detail", args=["tenant-a", console["widget_key"].pk])
    page = html.unescape(client.get(url).content.decode())
    assert (
        f'data-key="{console["widget_key"].key}" data-agent="{console["agent"].pk}" async' in page
    )
    assert "voiceplatform-widget.js" in page and "Open a demo page" in page
    client.post(url, {"allowed_origins": "https://shop.example\nhttp://testserver"})
    console["widget_key"].refresh_from_db()
    assert console["widget_key"].allowed_origins == ["https://shop.example", "http://testserver"]
    response = client.post(url, {"allowed_origins": "shop.example"})
    assert b"an origin starts with http" in response.content


def test_session_page_shows_segments_and_summary(client, world, console):
    from agents.models import SessionSegment, SessionSummary

    session = console["session"]
    with tenant_scope(world.tenant_a):
        SessionSegment.objects.create(
            tenant=world.tenant_a, session=session, index=0, upstream_session_id="sess_a",
            reason="initial",
        )  # fmt: skip
        SessionSegment.objects.create(
            tenant=world.tenant_a, session=session, index=1, upstream_session_id="sess_b",
            reason="max_duration", seed_summary="User: order 4821.", gap_ms=412,
        )  # fmt: skip
        SessionSummary.objects.create(
            tenant=world.tenant_a, session=session, text="User: order 4821.", revision=2,
            through_sequence=1, method="local",
        )  # fmt: skip
    client.force_login(world.owner_a)
    page = client.get(reverse("session-detail", args=["tenant-a", session.pk])).content.decode()
    assert "Rotated before the upstream&#x27;s time limit · 412 ms gap" in page
    assert "<code>sess_b</code>" in page
    assert "User: order 4821." in page and "Revision 2, local" in page
