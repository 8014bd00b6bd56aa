import json

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import Agent
from tenants import services
from tenants.models import Membership, Role, Tenant, WidgetKey
from tenants.scoping import scopes_disabled, tenant_scope


def run_json(capsys):
    call_command("seed_demo", "--json")
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object on one line
    return json.loads(out)


def test_seed_demo_twice_gives_one_tenant(db, capsys):
    first = run_json(capsys)
    second = run_json(capsys)
    assert set(first) == {"tenant", "username", "password", "agent_id", "widget_key", "api_key"}
    assert Tenant.objects.filter(slug="demo").count() == 1
    assert first["agent_id"] == second["agent_id"]
    assert first["widget_key"] == second["widget_key"]
    assert first["api_key"] != second["api_key"]  # a freshly issued key every run
    tenant = Tenant.objects.get(slug="demo")
    with tenant_scope(tenant):
        assert Agent.objects.count() == 1
        assert WidgetKey.objects.count() == 1
        assert Membership.objects.get().role == Role.OWNER
        agent = Agent.objects.get()
        widget_key = WidgetKey.objects.get()
    assert agent.provider == "local"
    assert widget_key.allowed_origins == ["http://127.0.0.1:8000", "http://localhost:8000"]


def test_seed_demo_login_and_keys_work(db, capsys):
    seed = run_json(capsys)
    assert authenticate(username=seed["username"], password=seed["password"]) is not None
    api_key = services.api_key_authenticate(seed["api_key"])
    assert api_key.tenant.slug == "demo"
    assert api_key.default_agent_id == seed["agent_id"]


def test_createtenant_creates_owner_and_refuses_duplicates(db):
    call_command(
        "createtenant", "acme", "--name", "Acme", "--owner-email", "boss@acme.test",
        "--owner-password", "s3cret-pass-word",
    )  # fmt: skip
    tenant = Tenant.objects.get(slug="acme")
    with tenant_scope(tenant):
        membership = Membership.objects.get()
    assert membership.user.username == "boss@acme.test" and membership.role == Role.OWNER
    assert authenticate(username="boss@acme.test", password="s3cret-pass-word") is not None
    with pytest.raises(CommandError, match="already exists"):
        call_command("createtenant", "acme", "--name", "Again", "--owner-email", "x@acme.test")
    with pytest.raises(CommandError, match="not a valid slug"):
        call_command("createtenant", "Bad Slug", "--name", "Bad", "--owner-email", "x@acme.test")
    with scopes_disabled():
        assert Membership.objects.count() == 1


def test_issue_api_key_for_unknown_tenant_fails(db):
    with pytest.raises(CommandError, match="no tenant"):
        call_command("issue_api_key", "--tenant", "nope")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_seed_demo_allows_the_port_the_platform_runs_on(db, capsys, client, monkeypatch, how):
    """``PORT=9000 make run``: the bundled demo page on port 9000 gets a widget token."""
    from django.core.cache import cache

    cache.clear()
    if how == "option":
        call_command("seed_demo", "--json", "--port", "9000")
    else:
        monkeypatch.setenv("PORT", "9000")
        call_command("seed_demo", "--json")
    seed = json.loads(capsys.readouterr().out)
    with scopes_disabled():
        origins = WidgetKey.objects.get(key=seed["widget_key"]).allowed_origins
    assert origins == [
        "http://127.0.0.1:8000", "http://localhost:8000",
        "http://127.0.0.1:9000", "http://localhost:9000",
    ]  # fmt: skip
    for origin, status in (("http://localhost:9000", 201), ("http://localhost:9001", 403)):
        response = client.post(
            "/widget/session", {"key": seed["widget_key"]}, content_type="application/json",
            headers={"Origin": origin},
        )  # fmt: skip
        assert response.status_code == status, response.content


def test_make_run_seeds_with_the_port_it_runs_on():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    run = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "seed_demo --port $(PORT)" in run
    assert "runplatform --host $(HOST) --port $(PORT)" in run
