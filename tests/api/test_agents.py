"""Agents over the REST API: CRUD as versions, diffs, publish, tools, MCP servers; isolation."""

from __future__ import annotations

import pytest

from agents.models import Agent, AgentVersion
from tenants.models import AuditEvent
from tenants.scoping import tenant_scope
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def test_create_read_list_an_agent(api_a, world):
    created = api_a.post(
        "/api/v1/agents", {"name": "Sales", "instructions": "Sell.", "voice": "cedar"}
    )
    assert created.status == 201, created.body
    agent = created.body
    assert (agent["name"], agent["instructions"], agent["voice"]) == ("Sales", "Sell.", "cedar")
    assert (agent["status"], agent["live_version"], agent["model"]) == (
        "active", 1, "gpt-realtime-2",
    )  # fmt: skip
    read = api_a.get(f"/api/v1/agents/{agent['id']}")
    assert read.status == 200 and read.body == agent
    listed = api_a.get("/api/v1/agents")
    assert [row["name"] for row in listed.body["data"]] == ["Sales"]
    with tenant_scope(world.tenant_a):
        assert Agent.objects.get(pk=agent["id"]).tenant_id == world.tenant_a.pk
        assert AuditEvent.objects.filter(action="agent.created").count() == 1


def test_create_with_a_kind_takes_its_default_model(api_a):
    created = api_a.post("/api/v1/agents", {"name": "Scribe", "kind": "transcription"})
    assert created.status == 201, created.body
    assert created.body["kind"] == "transcription"
    assert created.body["model"] != "gpt-realtime-2"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "voice": "nobody"}, "voice"),
        ({"name": "x", "model": "gpt-4o"}, "model"),
        ({"name": "x", "kind": "translation"}, "target_language"),
        ({"name": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"name": "x", "colour": "red"}, "colour"),
        ({"name": "x", "analysis_schema": {"type": "string"}}, "analysis_schema"),
        ({"name": "x", "instructions": None}, "instructions"),
    ],
)
def test_invalid_agents_are_400_naming_the_field(api_a, world, body, param):
    answer = api_a.post("/api/v1/agents", body)
    assert answer.status == 400, answer.body
    error = error_of(answer)
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error
    with tenant_scope(world.tenant_a):
        assert not Agent.objects.exists()


def test_update_changes_the_draft_publish_makes_it_a_live_version_and_diff_says_what_changed(
    api_a, agent_a
):
    path = f"/api/v1/agents/{agent_a.pk}"
    updated = api_a.patch(path, {"instructions": "Be kind.", "voice": "cedar"})
    assert updated.status == 200, updated.body
    assert (updated.body["instructions"], updated.body["live_version"]) == ("Be kind.", 1)
    assert updated.body["unpublished_changes"] == ["instructions", "voice"]
    published = api_a.post(f"{path}/publish", {"note": "tone"})
    assert published.status == 200, published.body
    assert (published.body["live_version"], published.body["unpublished_changes"]) == (2, [])
    again = api_a.post(f"{path}/publish", {})
    assert again.body["live_version"] == 2  # nothing to publish: no version
    unchanged = api_a.patch(path, {"instructions": "Be kind."})
    assert (unchanged.body["live_version"], unchanged.body["unpublished_changes"]) == (2, [])
    versions = api_a.get(f"{path}/versions").body["data"]
    assert [(v["number"], v["live"], v["note"]) for v in versions] == [
        (2, True, "tone"), (1, False, "created"),
    ]  # fmt: skip
    diff = api_a.get(f"{path}/versions/2/diff")
    assert diff.status == 200
    assert diff.body["from_version"] == 1 and diff.body["to_version"] == 2
    assert diff.body["changes"] == [
        {"field": "voice", "before": "marin", "after": "cedar"},
        {"field": "instructions", "before": "Be brief.", "after": "Be kind."},
    ] or sorted(diff.body["changes"], key=lambda c: c["field"]) == [
        {"field": "instructions", "before": "Be brief.", "after": "Be kind."},
        {"field": "voice", "before": "marin", "after": "cedar"},
    ]
    first = api_a.get(f"{path}/versions/1/diff").body
    assert first["from_version"] is None
    assert {"field": "name", "before": None, "after": "Support"} in first["changes"]
    against = api_a.get(f"{path}/versions/1/diff", query={"against": 2}).body
    assert {"field": "voice", "before": "cedar", "after": "marin"} in against["changes"]
    one = api_a.get(f"{path}/versions/1").body
    assert one["config"]["instructions"] == "Be brief." and one["live"] is False


def test_publish_makes_an_earlier_version_live(api_a, agent_a):
    path = f"/api/v1/agents/{agent_a.pk}"
    api_a.patch(path, {"instructions": "Version two."})
    published = api_a.post(f"{path}/versions/1/publish")
    assert published.status == 200, published.body
    assert (published.body["instructions"], published.body["live_version"]) == ("Be brief.", 1)
    agent_a.refresh_from_db()
    assert agent_a.instructions == "Be brief."
    missing = api_a.post(f"{path}/versions/9/publish")
    assert (missing.status, error_of(missing)["code"]) == (404, "version_not_found")


def test_archive_and_restore(api_a, agent_a):
    path = f"/api/v1/agents/{agent_a.pk}"
    assert api_a.post(f"{path}/archive").body["status"] == "archived"
    assert [a["id"] for a in api_a.get("/api/v1/agents?status=archived").body["data"]] == [
        agent_a.pk
    ]
    assert api_a.get("/api/v1/agents?status=active").body["data"] == []
    assert api_a.post(f"{path}/restore").body["status"] == "active"
    bad = api_a.get("/api/v1/agents?status=gone")
    assert (bad.status, error_of(bad)["param"]) == (400, "status")


def test_tools_add_replace_list_delete(api_a, agent_a):
    path = f"/api/v1/agents/{agent_a.pk}/tools"
    tool = {
        "name": "lookup_order",
        "description": "Find an order",
        "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        "webhook_url": "https://tools.example.com/orders",
    }
    added = api_a.post(path, tool)
    assert added.status == 201, added.body
    assert added.body["name"] == "lookup_order" and added.body["execution"] == "webhook"
    duplicate = api_a.post(path, tool)
    assert (duplicate.status, error_of(duplicate)["param"]) == (400, "name")
    no_url = api_a.post(path, {**tool, "name": "other", "webhook_url": None})
    assert (no_url.status, error_of(no_url)["param"]) == (400, "webhook_url")
    bad_schema = api_a.post(path, {**tool, "name": "other", "parameters": {"type": "array"}})
    assert (bad_schema.status, error_of(bad_schema)["param"]) == (400, "parameters")
    replaced = api_a.put(f"{path}/lookup_order", {**tool, "description": "Find it"})
    assert replaced.status == 200 and replaced.body["description"] == "Find it"
    assert [t["name"] for t in api_a.get(path).body["data"]] == ["lookup_order"]
    assert api_a.delete(f"{path}/lookup_order").status == 204
    assert api_a.get(path).body["data"] == []
    gone = api_a.delete(f"{path}/lookup_order")
    assert (gone.status, error_of(gone)["code"]) == (404, "tool_not_found")
    with tenant_scope(agent_a.tenant_id):  # tools are the draft's: no version until published
        assert AgentVersion.objects.filter(agent=agent_a).count() == 1
    assert api_a.get(f"/api/v1/agents/{agent_a.pk}").body["unpublished_changes"] == []


def test_mcp_servers_never_show_their_credential(api_a, agent_a, settings):
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = True
    path = f"/api/v1/agents/{agent_a.pk}/mcp_servers"
    server = {
        "label": "crm",
        "url": "https://127.0.0.1/mcp",
        "authorization": "Bearer s3cret-t0ken",
    }
    added = api_a.post(path, server)
    assert added.status == 201, added.body
    assert added.body["label"] == "crm" and added.body["authorization_masked"]
    assert "s3cret" not in added.content.decode()
    listed = api_a.get(path)
    assert [s["label"] for s in listed.body["data"]] == ["crm"]
    for text in (listed.content, api_a.get(f"/api/v1/agents/{agent_a.pk}").content,
                 api_a.get(f"/api/v1/agents/{agent_a.pk}/versions").content):  # fmt: skip
        assert b"s3cret" not in text and b"authorization_encrypted" not in text
    plain = api_a.post(path, {"label": "web", "url": "http://example.com/mcp"})
    assert (plain.status, error_of(plain)["param"]) == (400, "url")
    assert api_a.delete(f"{path}/crm").status == 204
    assert api_a.get(path).body["data"] == []


def test_another_tenants_agent_is_404_and_unchanged(api_a, agent_b):
    before = (agent_b.name, agent_b.instructions, agent_b.status)
    base = f"/api/v1/agents/{agent_b.pk}"
    answers = [
        api_a.get(base),
        api_a.patch(base, {"name": "Mine now"}),
        api_a.post(f"{base}/archive"),
        api_a.get(f"{base}/versions"),
        api_a.get(f"{base}/versions/1"),
        api_a.get(f"{base}/versions/1/diff"),
        api_a.post(f"{base}/versions/1/publish"),
        api_a.get(f"{base}/tools"),
        api_a.post(f"{base}/tools", {"name": "t", "execution": "client"}),
        api_a.get(f"{base}/mcp_servers"),
    ]
    for answer in answers:
        assert (answer.status, error_of(answer)["code"]) == (404, "agent_not_found")
    assert api_a.get("/api/v1/agents").body["data"] == []
    agent_b.refresh_from_db()
    assert (agent_b.name, agent_b.instructions, agent_b.status) == before
    with tenant_scope(agent_b.tenant_id):
        assert AgentVersion.objects.filter(agent=agent_b).count() == 1


def test_conversation_start_settings_follow_the_consoles_rules(api_a, agent_a):
    path = f"/api/v1/agents/{agent_a.pk}"
    undeclared = api_a.patch(path, {"instructions": "Greet {{customer_name}}."})
    assert undeclared.status == 400
    assert (error_of(undeclared)["param"], "customer_name" in error_of(undeclared)["message"]) == (
        "instructions", True,
    )  # fmt: skip
    bad_name = api_a.patch(path, {"variables": {"Customer": "x"}})
    assert (bad_name.status, error_of(bad_name)["param"]) == (400, "variables")
    no_number = api_a.patch(path, {"transfer_call_enabled": True})
    assert (no_number.status, error_of(no_number)["param"]) == (400, "transfer_number")
    ok = api_a.patch(path, {
        "instructions": "Greet {{customer_name}}.", "variables": {"customer_name": "there"},
        "speaks_first": "agent", "first_message": "Hello {{customer_name}}!",
        "transfer_call_enabled": True, "transfer_number": "+14155550100", "publish": True,
    })  # fmt: skip
    assert ok.status == 200, ok.body
    assert (ok.body["variables"], ok.body["speaks_first"], ok.body["live_version"]) == (
        {"customer_name": "there"}, "agent", 2,
    )  # fmt: skip
