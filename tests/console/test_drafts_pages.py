"""The console's side of drafts: who may publish, and pinning a version on a widget key or a
phone number (with a clear error for a version the agent does not have)."""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from agents.configuration import agent_create, agent_publish, agent_update
from agents.models import AgentVersion, PhoneNumber
from tenants.models import WidgetKey
from tenants.scoping import tenant_scope
from tests.console.test_console_pages import user_with_role

TOKEN = "f" * 32


@pytest.fixture
def agent(world):
    agent = agent_create(
        tenant=world.tenant_a, actor=world.owner_a,
        fields={"name": "Support", "provider": "local", "instructions": "One."},
    )  # fmt: skip
    agent_update(agent=agent, actor=world.owner_a, fields={"instructions": "Two."})
    agent_publish(agent, world.owner_a)
    agent_update(agent=agent, actor=world.owner_a, fields={"instructions": "Draft."})
    return agent


@pytest.mark.parametrize("role", ["finance", "viewer"])
def test_finance_and_viewer_cannot_publish_and_see_no_publish_button(client, world, agent, role):
    client.force_login(user_with_role(world, role))
    args = ["tenant-a", agent.pk]
    assert client.post(reverse("agent-publish", args=args)).status_code == 403
    page = client.get(reverse("agent-edit", args=args)).content.decode()
    assert 'id="draft-changes"' in page and 'id="publish-draft"' not in page
    with tenant_scope(world.tenant_a):
        assert AgentVersion.objects.filter(agent=agent).count() == 2


def test_the_agent_list_marks_unpublished_drafts(client, world, agent):
    client.force_login(world.owner_a)
    page = client.get(reverse("agent-list", args=["tenant-a"])).content.decode()
    assert "v2" in page and 'title="The draft has unpublished changes">draft<' in page
    agent_publish(agent, world.owner_a)
    page = client.get(reverse("agent-list", args=["tenant-a"])).content.decode()
    assert "v3" in page and ">draft<" not in page


def test_a_widget_key_is_created_pinned_and_repinned(client, world, agent):
    client.force_login(world.owner_a)
    url = reverse("widget-key-list", args=["tenant-a"])
    form = {"name": "Shop", "agent": agent.pk, "allowed_origins": "https://shop.example"}
    response = client.post(url, {**form, "version": "9"})
    assert response.status_code == 200 and "Support has no version 9." in response.content.decode()
    response = client.post(url, {**form, "name": "Any", "agent": "", "version": "1"})
    assert "Choose an agent to pin one of its versions." in response.content.decode()
    assert client.post(url, {**form, "version": "1"}).status_code == 302
    with tenant_scope(world.tenant_a):
        key = WidgetKey.objects.get()
    assert key.version.number == 1
    detail = reverse("widget-key-detail", args=["tenant-a", key.pk])
    assert '<dd id="widget-key-version">v1 (pinned)</dd>' in client.get(detail).content.decode()
    response = client.post(detail, {"form": "version", "version": "7"})
    assert "Support has no version 7." in html.unescape(response.content.decode())
    client.post(detail, {"form": "version", "version": ""})
    key.refresh_from_db()
    assert key.version is None
    client.force_login(user_with_role(world, "viewer"))
    assert client.post(detail, {"form": "version", "version": "2"}).status_code == 403


def test_a_phone_number_is_added_pinned(client, world, agent):
    client.force_login(world.owner_a)
    url = reverse("phone-number-list", args=["tenant-a"])
    form = {"number": "+14155550177", "agent": agent.pk, "twilio_auth_token": TOKEN}
    response = client.post(url, {**form, "version": "5"})
    assert "Support has no version 5." in response.content.decode()
    assert client.post(url, {**form, "version": "1"}).status_code == 302
    with tenant_scope(world.tenant_a):
        number = PhoneNumber.objects.get()
    assert number.version.number == 1
    assert "v1 (pinned)" in client.get(url).content.decode()


def test_a_try_it_session_says_it_ran_the_draft(client, world, agent):
    from agents.access import agent_runtime
    from agents.services import session_start

    session = session_start(
        tenant=world.tenant_a, agent=agent_runtime(agent, draft=True), channel="console",
        end_user="console:1",
    )  # fmt: skip
    client.force_login(world.owner_a)
    page = client.get(reverse("session-detail", args=["tenant-a", session.pk])).content.decode()
    assert "<dd>Console (Try-it)</dd>" in page and "<dd>the draft (Try-it)</dd>" in page
    listed = client.get(reverse("session-list", args=["tenant-a"]) + "?channel=console")
    assert "<td>Console (Try-it)</td>" in listed.content.decode()
