"""A client-side tool in the widget, in a real Chromium against a real platform.

As with OpenAI, the client that answers a call also asks for the next response: the page's tool
runs once, the widget sends its output and ``response.create``, and the platform adds none of
its own (so no ``conversation_already_has_active_response`` and no second run of the tool).
"""

from __future__ import annotations

import json

import pytest

from tests.browser.test_widget import click_launcher, wait_for

pytestmark = pytest.mark.browser

SETUP = r"""
import json
from agents.configuration import agent_create
from tenants import services
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

with scopes_disabled():
    tenant = Tenant.objects.get(slug="demo")
with tenant_scope(tenant):
    agent = agent_create(tenant=tenant, actor=None, fields={
        "name": "Order desk", "kind": "voice_agent", "provider": "local",
        "model": "gpt-realtime-2", "voice": "marin",
        "tools": [{"name": "status", "description": "The status of the caller's order",
                   "execution": "client", "timeout_seconds": 30,
                   "parameters": {"type": "object", "properties": {}}}]})
    key = services.widget_key_create(
        tenant=tenant, name="Tools page", allowed_origins=[ORIGIN], agent=agent)
print(json.dumps({"agent": agent.pk, "key": key.key}))
"""

REGISTER = """
window.toolRuns = [];
VoicePlatformWidget.registerTool("status", function (args) {
  window.toolRuns.push(args);
  return {order: "shipped", eta: "Friday"};
});
"""


def test_a_client_tool_runs_once_and_the_widget_asks_for_the_answer(
    platform, make_browser, utterance_wav
):
    created = json.loads(
        platform.shell(SETUP.replace("ORIGIN", repr(platform.origin))).splitlines()[-1]
    )
    driver = make_browser(utterance_wav)
    driver.get(f"{platform.origin}/widget/demo/?key={created['key']}&agent={created['agent']}")
    wait_for(driver, lambda s: s["status"] == "idle", 10, "the widget to mount")
    driver.execute_script(REGISTER)
    click_launcher(driver)

    # "what is the status of my order" names the tool: the engine calls it, the page answers.
    state = wait_for(
        driver,
        lambda s: any(
            line["role"] == "assistant" and "shipped" in line["text"] for line in s["transcript"]
        ),
        45,
        "the answer built from the tool's output",
    )
    assert driver.execute_script("return window.toolRuns") == [{}]
    assert state["errors"] == []
    assert state["serverErrors"] == []
