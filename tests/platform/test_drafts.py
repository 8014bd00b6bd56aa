"""Drafts against a real Daphne process and a scripted OpenAI upstream: the instructions that
reach the upstream are the live version's on the widget and the API socket while the draft
differs, a pinned version's where a widget key or ``?version=`` pins one, and the draft's only
on the console's Try-it, whose session is recorded on the console channel.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.servers import Platform, base_environ
from tests.upstreams import ScriptedUpstream

SHOP = "https://shop.example"

SETUP = r"""
import json
from agents.configuration import agent_create, agent_publish, agent_update
from tenants import services
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

with scopes_disabled():
    tenant = Tenant.objects.get(slug="demo")
fields = {"name": "Drafted", "kind": "voice_agent", "provider": "openai",
          "model": "gpt-realtime-2", "instructions": "Version one."}
with tenant_scope(tenant):
    agent = agent_create(tenant=tenant, actor=None, fields=fields)
    agent_update(agent=agent, actor=None, fields={"instructions": "Version two."})
    agent_publish(agent, None)
    agent_update(agent=agent, actor=None, fields={"instructions": "Draft three."})
    _, raw_key = services.api_key_issue(tenant=tenant, name="drafts", default_agent=agent)
    live = services.widget_key_create(tenant=tenant, name="live", agent=agent,
                                      allowed_origins=["https://shop.example"])
    pinned = services.widget_key_create(tenant=tenant, name="pinned", agent=agent,
                                        allowed_origins=["https://shop.example"], version_number=1)
print(json.dumps({"agent": agent.pk, "api_key": raw_key, "live": live.key, "pinned": pinned.key}))
"""

MINT_WIDGET = r"""
from agents.tokens import widget_token_mint
print(widget_token_mint(key="{key}", origin="https://shop.example").value)
"""

MINT_CONSOLE = r"""
from agents.models import Agent
from agents.tokens import console_token_mint
from tenants.scoping import scopes_disabled
with scopes_disabled():
    agent = Agent.objects.get(pk={agent})
print(console_token_mint(agent=agent, end_user="console:1").value)
"""

SESSIONS = r"""
import json
from agents.models import Session
from tenants.scoping import scopes_disabled
with scopes_disabled():
    rows = Session.objects.order_by("pk").select_related("agent_version")
    print(json.dumps([[row.channel, row.agent_version.number if row.agent_version else None,
                       row.widget_key_id is not None] for row in rows]))
"""


class InstructionsUpstream(ScriptedUpstream):
    """Records the instructions of every session the platform opens upstream."""

    def __init__(self) -> None:
        self.instructions: list[str] = []
        super().__init__()

    async def _handler(self, connection) -> None:
        receive = connection.recv

        async def recv(*args, **kwargs):
            message = await receive(*args, **kwargs)
            event = json.loads(message)
            if event.get("type") == "session.update":
                self.instructions.append(event["session"].get("instructions"))
            return message

        connection.recv = recv
        await super()._handler(connection)


@pytest.fixture(scope="module")
def drafted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("drafts")
    upstream = InstructionsUpstream()
    environ = base_environ(tmp_path, **upstream.environ, VP_RECONNECT_ATTEMPTS="0")
    platform = Platform(environ, tmp_path)
    try:
        created = json.loads(platform.shell(SETUP).splitlines()[-1])
        yield platform, upstream, created
    finally:
        platform.stop()
        upstream.stop()


async def first_event_then_close(connect) -> dict:
    async with connect as connection:
        return json.loads(await asyncio.wait_for(connection.recv(), 10))


def test_each_door_runs_the_live_pinned_or_draft_version(drafted):
    platform, upstream, created = drafted

    def widget(token: str, subprotocol: str = "vp-token"):
        return websockets.connect(
            f"{platform.ws_url}/ws/widget/",
            subprotocols=["realtime", f"{subprotocol}.{token}"],
            origin=SHOP,
            open_timeout=20,
        )

    def api(query: str = ""):
        return websockets.connect(
            f"{platform.ws_url}/v1/realtime?agent={created['agent']}{query}",
            additional_headers={"Authorization": f"Bearer {created['api_key']}"},
            open_timeout=20,
        )

    def mint(code: str) -> str:
        return platform.shell(code).splitlines()[-1]

    opened = []
    for connect in (
        lambda: widget(mint(MINT_WIDGET.format(key=created["live"]))),
        lambda: widget(mint(MINT_WIDGET.format(key=created["pinned"]))),
        lambda: api(),
        lambda: api("&version=1"),
        lambda: widget(
            mint(MINT_CONSOLE.format(agent=created["agent"])), "openai-insecure-api-key"
        ),
    ):
        event = asyncio.run(first_event_then_close(connect()))
        opened.append(event["type"])
    assert opened == ["session.created"] * 5
    assert upstream.instructions == [
        "Version two.", "Version one.", "Version two.", "Version one.", "Draft three.",
    ]  # fmt: skip
    assert json.loads(platform.shell(SESSIONS).splitlines()[-1]) == [
        ["widget", 2, True], ["widget", 1, True], ["api", 2, False], ["api", 1, False],
        ["console", None, False],
    ]  # fmt: skip

    async def unknown_version() -> tuple[dict, int | None]:
        connection = await api("&version=9")
        event = json.loads(await asyncio.wait_for(connection.recv(), 10))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(connection.recv(), 10)
        return event, connection.close_code

    event, code = asyncio.run(unknown_version())
    assert (event["error"]["code"], code) == ("version_not_found", 4404)
