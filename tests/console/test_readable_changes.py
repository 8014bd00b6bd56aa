"""Audit events and version diffs read as ``field: before → after`` lines, not raw dicts."""

from __future__ import annotations

from django.urls import reverse

from agents.configuration import agent_create, agent_publish, agent_update
from tenants import services
from tenants.templatetags.console_format import Line, change_lines, diff_lines


def test_shapes_of_stored_changes_become_lines():
    assert change_lines({"from": ["https://a"], "to": ["https://a", "https://b"]}) == [
        Line(field="", before="https://a", after="https://a, https://b", is_change=True)
    ]
    assert change_lines({"role": "admin", "from": "viewer"}) == [
        Line(field="role", before="viewer", after="admin", is_change=True)
    ]
    assert change_lines({"data_policy": ["keep", "redact"]}, "tenant.data_policy_changed") == [
        Line(field="data_policy", before="keep", after="redact", is_change=True)
    ]
    assert change_lines({"sessions_days": {"from": None, "to": 30}}) == [
        Line(field="sessions_days", before="—", after="30", is_change=True)
    ]
    assert change_lines({"deleted": {"sessions": {"deleted": 3, "window_days": 30}}}) == [
        Line(field="deleted.sessions.deleted", value="3"),
        Line(field="deleted.sessions.window_days", value="30"),
    ]
    assert change_lines({"enabled": False, "reason": "failing"}) == [
        Line(field="enabled", value="no"),
        Line(field="reason", value="failing"),
    ]


def test_a_diff_of_tools_names_the_tool_and_the_setting_that_changed():
    before = [{"name": "lookup", "timeout_seconds": 10, "description": "Find"}]
    after = [{"name": "lookup", "timeout_seconds": 20, "description": "Find"}]
    assert diff_lines({"tools": (before, after), "vad_eagerness": ("auto", "high")}) == [
        Line(field="tools[lookup].timeout_seconds", before="10", after="20", is_change=True),
        Line(field="vad_eagerness", before="auto", after="high", is_change=True),
    ]


def test_the_audit_page_and_the_diff_show_no_raw_dicts(client, world):
    widget_key = services.widget_key_create(
        tenant=world.tenant_a, name="w", allowed_origins=["https://a.example"], actor=world.owner_a
    )
    services.widget_key_update_origins(
        widget_key=widget_key, allowed_origins=["https://a.example", "https://b.example"],
        actor=world.owner_a,
    )  # fmt: skip
    agent = agent_create(
        tenant=world.tenant_a, actor=world.owner_a, fields={"name": "A", "provider": "local"}
    )
    agent_update(
        agent=agent, actor=world.owner_a,
        fields={"tools": [{"type": "function", "name": "lookup", "description": "Find",
                           "parameters": {"type": "object"}, "execution": "client"}]},
    )  # fmt: skip
    agent_publish(agent, world.owner_a)
    client.force_login(world.owner_a)
    audit = client.get(reverse("audit-log", args=["tenant-a"])).content.decode()
    assert "{&#x27;" not in audit and "{'" not in audit and "[&#x27;" not in audit
    assert "<del>https://a.example</del> → <ins>https://a.example, https://b.example</ins>" in audit
    versions = client.get(reverse("agent-versions", args=["tenant-a", agent.pk]), {"a": 1, "b": 2})
    page = versions.content.decode()
    assert "{&#x27;" not in page and "[{" not in page
    assert "<code>tools[lookup].description</code>" in page
    assert "<code>tools[lookup].parameters.type</code>" in page
