"""A conversation's start and end against a real Daphne process and a scripted OpenAI upstream:
prompt variables from the API socket's query reach the upstream instructions, the agent's first
message is the platform's opening response.create, and ``end_call`` closes the socket (1000,
``call_ended``) once the goodbye's audio has had time to play."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from tests.servers import Platform, base_environ
from tests.upstreams import ScriptedUpstream

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
        "name": "Greeter", "kind": "voice_agent", "provider": "openai",
        "model": "gpt-realtime-2", "voice": "marin", "turn_detection": "none",
        "instructions": "You help {{customer_name}} (plan: {{plan}}).",
        "speaks_first": "agent", "first_message": "Hello {{customer_name}}, this is Max.",
        "variables": {"customer_name": "there", "plan": "basic"}, "end_call_enabled": True})
    _, raw_key = services.api_key_issue(tenant=tenant, name="greeter", default_agent=agent)
print(json.dumps({"api_key": raw_key, "agent_id": agent.pk}))
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("conversation-start")
    upstream = ScriptedUpstream()
    platform = Platform(base_environ(tmp_path, **upstream.environ), tmp_path)
    try:
        created = json.loads(platform.shell(SETUP).splitlines()[-1])
        yield platform, upstream, created
    finally:
        platform.stop()
        upstream.stop()


def connect(platform, api_key, query):
    return websockets.connect(
        f"{platform.ws_url}/v1/realtime?model=gpt-realtime-2{query}",
        additional_headers={"Authorization": f"Bearer {api_key}"},
        open_timeout=20,
    )


def test_query_variables_fill_the_instructions_and_the_agent_greets_first(served):
    platform, upstream, created = served
    upstream.mode = "normal"

    async def talk() -> list[dict]:
        async with connect(
            platform, created["api_key"], "&var_customer_name=Ada%0ALovelace&var_role=admin"
        ) as connection:
            events = []
            while not events or events[-1]["type"] != "response.done":
                events.append(json.loads(await asyncio.wait_for(connection.recv(), 10)))
            return events

    before = upstream.connections
    events = asyncio.run(talk())
    received = upstream.received[before + 1]
    update, opening = received[0], received[1]
    # Declared names only, a newline made a space; the undeclared plan keeps its default.
    assert update["session"]["instructions"] == "You help Ada Lovelace (plan: basic)."
    assert opening["type"] == "response.create"
    assert opening["response"]["instructions"].splitlines()[0] == (
        "Greeting: Hello Ada Lovelace, this is Max."
    )
    # The client did not ask: the agent spoke first, and the backend hears it.
    assert [event["type"] for event in events][:2] == ["session.created", "response.created"]
    assert "admin" not in json.dumps(received)


def test_end_call_closes_the_socket_after_the_goodbye(served):
    platform, upstream, created = served
    upstream.mode = "goodbye"

    async def talk() -> tuple[list[dict], int, str, float]:
        async with connect(platform, created["api_key"], "") as connection:
            events = []
            audio_done_at = None
            try:
                while True:
                    events.append(json.loads(await asyncio.wait_for(connection.recv(), 10)))
                    if events[-1]["type"] == "response.done":
                        audio_done_at = time.monotonic()
            except websockets.ConnectionClosed:
                pass
            waited = time.monotonic() - audio_done_at
            return events, connection.close_code, connection.close_reason, waited

    events, code, reason, waited = asyncio.run(talk())
    assert (code, reason) == (1000, "call_ended")
    assert [event["type"] for event in events if event["type"] == "error"] == []
    # 500 ms of goodbye arrived at once; the close waited for it to be heard.
    assert waited >= 0.4
    deadline = time.monotonic() + 15
    while platform.session_rows()[-1] != ["api", "agent_ended"]:
        assert time.monotonic() < deadline, platform.session_rows()
        time.sleep(0.3)
