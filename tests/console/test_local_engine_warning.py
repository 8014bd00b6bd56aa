"""The console warns where an agent set to OpenAI runs on the local engine because no OpenAI key
is stored (it would only answer "You said: …"): the agent form, Try-it and the session page."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from agents.configuration import agent_create
from agents.models import Agent, Session, TokenVariables
from billing.models import UsageEvent
from tenants import services
from tenants.models import ProviderCredential
from tenants.scoping import tenant_scope

WARNING = b'id="local-engine-warning"'


@pytest.fixture
def agents(world, settings):
    settings.OPENAI_API_KEY = ""  # no platform key either
    openai = agent_create(
        tenant=world.tenant_a, actor=world.owner_a, fields={"name": "Cloud", "provider": "openai"}
    )
    local = agent_create(
        tenant=world.tenant_a, actor=world.owner_a, fields={"name": "Dev", "provider": "local"}
    )
    return openai, local


def agent_pages(agent):
    return [
        reverse("agent-edit", args=["tenant-a", agent.pk]),
        reverse("agent-try", args=["tenant-a", agent.pk]),
    ]


def session_of(world, agent, *, provider, ended=True):
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(
            tenant=world.tenant_a, agent=agent, channel="widget", model="gpt-realtime-2"
        )
        UsageEvent.objects.create(
            tenant=world.tenant_a, session=session, agent=agent, model="gpt-realtime-2",
            provider=provider, upstream_response_id=f"resp_{session.pk}",
            occurred_at=session.started_at,
        )  # fmt: skip
    return reverse("session-detail", args=["tenant-a", session.pk])


def test_an_openai_agent_without_a_key_is_flagged_on_its_pages(client, world, agents):
    openai, local = agents
    client.force_login(world.member_a)  # a viewer sees it too
    for url in agent_pages(openai):
        page = client.get(url)
        assert page.status_code == 200
        assert WARNING in page.content, url
        assert "You said: …".encode() in page.content
    for url in agent_pages(local):  # chosen on purpose: nothing to warn about
        assert WARNING not in client.get(url).content


def test_with_a_key_stored_there_is_no_warning(client, world, agents, settings):
    openai, _ = agents
    services.provider_credential_set(
        tenant=world.tenant_a, secret="sk-" + "a" * 40, actor=world.owner_a
    )
    client.force_login(world.owner_a)
    for url in agent_pages(openai):
        assert WARNING not in client.get(url).content
    # The platform's own key serves tenants without one.
    settings.OPENAI_API_KEY = "sk-platform-" + "p" * 30
    with tenant_scope(world.tenant_a):
        ProviderCredential.objects.all().delete()
    for url in agent_pages(openai):
        assert WARNING not in client.get(url).content


def test_the_session_page_says_which_engine_answered(client, world, agents):
    openai, local = agents
    client.force_login(world.owner_a)
    assert WARNING in client.get(session_of(world, openai, provider="local")).content
    assert WARNING not in client.get(session_of(world, openai, provider="openai")).content
    assert WARNING not in client.get(session_of(world, local, provider="local")).content


def test_try_it_offers_the_prompt_variables_and_its_token_carries_them(client, world, agents):
    openai, _ = agents
    with tenant_scope(world.tenant_a):
        Agent.objects.filter(pk=openai.pk).update(variables={"customer_name": "there"})
    client.force_login(world.owner_a)  # owners and admins try agents (the draft)
    page = client.get(reverse("agent-try", args=["tenant-a", openai.pk]))
    assert b'data-vpw-variable="customer_name" value="there"' in page.content
    response = client.post(
        reverse("agent-try-token", args=["tenant-a", openai.pk]),
        data=json.dumps({"variables": {"customer_name": "Ada\nL", "other": "x"}}),
        content_type="application/json",
    )
    assert response.status_code == 201
    with tenant_scope(world.tenant_a):
        assert list(TokenVariables.objects.values_list("values", flat=True)) == [
            {"customer_name": "Ada L"}
        ]
    # A body that is not JSON: a token without values (the defaults apply), not an error.
    url = reverse("agent-try-token", args=["tenant-a", openai.pk])
    response = client.post(url, data="x", content_type="text/plain")
    assert response.status_code == 201


def test_an_agent_saves_as_its_form_is_rendered(client, world, agents):
    """The page's own values post back cleanly: no variables shows an empty box, not "{}"
    (which then failed as a variable name), on the edit page and on the new-agent page."""
    import re
    from html import unescape

    openai, _ = agents
    client.force_login(world.owner_a)
    for url in (
        reverse("agent-edit", args=["tenant-a", openai.pk]),
        reverse("agent-create", args=["tenant-a"]),
    ):
        page = client.get(url).content.decode()
        box = re.search(r'<textarea name="variables"[^>]*>(.*?)</textarea>', page, re.S)
        assert box is not None and box.group(1).strip() == "", url
    page = client.get(reverse("agent-edit", args=["tenant-a", openai.pk])).content.decode()
    form = page[page.index('<form method="post" class="card"') :]
    form = form[: form.index("</form>")]
    data: dict[str, str] = {}
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        kind = re.search(r'type="([^"]+)"', tag)
        if not name or (kind and kind.group(1) in ("checkbox", "radio") and "checked" not in tag):
            continue
        value = re.search(r'value="([^"]*)"', tag)
        checkable = kind and kind.group(1) in ("checkbox", "radio")
        data[name.group(1)] = unescape(value.group(1)) if value else ("on" if checkable else "")
    for name, body in re.findall(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        data[name] = unescape(body).lstrip("\n")
    for name, options in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', options)
        data[name] = chosen.group(1) if chosen else ""
    data["instructions"] = "Greeting: saved as rendered."
    response = client.post(reverse("agent-edit", args=["tenant-a", openai.pk]), data)
    assert response.status_code == 302, re.findall(
        r'class="error">([^<]*)', response.content.decode()
    )
