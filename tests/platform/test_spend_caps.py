"""Daily spend caps against a real Daphne process and a scripted OpenAI upstream.

Once a cap is crossed nothing more is served or billed: new API sessions of the agent are
refused at admission (4402 budget_exhausted, like the monthly budget), and a widget session
whose token was minted before its key's cap was crossed ends before its upstream opens, so
server VAD cannot start one more answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json

import pytest
import websockets

from tests.servers import Platform, api_connect, base_environ, events_until_closed
from tests.upstreams import ScriptedUpstream

SHOP = "https://shop.example"
SPEECH = base64.b64encode(b"\x00\x10" * 4800).decode()  # 200 ms of PCM16 24 kHz

SETUP = r"""
import json
from decimal import Decimal
from agents.configuration import agent_create
from billing.services import spend_cap_set
from tenants import services
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

with scopes_disabled():
    tenant = Tenant.objects.get(slug="demo")
fields = {"kind": "voice_agent", "provider": "openai", "model": "gpt-realtime-2",
          "voice": "marin", "turn_detection": "server_vad"}
with tenant_scope(tenant):
    capped = agent_create(tenant=tenant, actor=None, fields={"name": "Capped", **fields})
    shop = agent_create(tenant=tenant, actor=None, fields={"name": "Shop", **fields})
    _, raw_key = services.api_key_issue(tenant=tenant, name="caps", default_agent=capped)
    widget_key = services.widget_key_create(tenant=tenant, name="Shop",
                                            allowed_origins=["https://shop.example"], agent=shop)
spend_cap_set(tenant_id=tenant.pk, agent_id=capped.pk, daily_limit_usd=Decimal("0.01"))
spend_cap_set(tenant_id=tenant.pk, widget_key_id=widget_key.pk, daily_limit_usd=Decimal("0.01"))
print(json.dumps({"api_key": raw_key, "widget_key": widget_key.key, "shop": shop.pk,
                  "widget_key_id": widget_key.pk, "tenant": tenant.pk}))
"""

MINT = r"""
from agents.tokens import widget_token_mint
print(widget_token_mint(key="{key}", origin="https://shop.example").value)
"""

# The widget key's cap crossed by its other sessions ($0.0128 of audio out today).
SPEND = r"""
from django.utils import timezone
from billing.services import usage_event_record
usage_event_record(tenant_id={tenant}, session_id=None, agent_id={agent}, widget_key_id={key},
                   provider="openai", model="gpt-realtime-2", key="resp_elsewhere",
                   status="completed", audio_ms=0, occurred_at=timezone.now(),
                   usage={{"output_tokens": 200, "output_token_details": {{"audio_tokens": 200}}}})
"""

USAGE_KEYS = r"""
from tenants.scoping import scopes_disabled
from billing.models import UsageEvent
with scopes_disabled():
    print(sorted(UsageEvent.objects.values_list("upstream_response_id", flat=True)))
"""


class VadUpstream(ScriptedUpstream):
    """Answers response.create (``normal``) or, as server VAD, the first audio it hears."""

    async def _vad(self, connection) -> None:
        async for message in connection:
            if json.loads(message).get("type") == "input_audio_buffer.append":
                for event in ("speech_started", "speech_stopped"):
                    await connection.send(
                        json.dumps({"type": f"input_audio_buffer.{event}", "item_id": "item_u"})
                    )
                await self._respond(connection, f"resp_vad_{self.connections}")


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("spend-caps")
    upstream = VadUpstream()
    environ = base_environ(tmp_path, **upstream.environ, VP_RECONNECT_ATTEMPTS="0")
    platform = Platform(environ, tmp_path)
    try:
        created = json.loads(platform.shell(SETUP).splitlines()[-1])
        yield platform, upstream, created
    finally:
        platform.stop()
        upstream.stop()


async def api_session(platform: Platform, api_key: str):
    return await api_connect(platform.ws_url, api_key, open_timeout=20)


def test_after_the_agents_daily_cap_new_api_sessions_are_refused(capped):
    platform, upstream, created = capped
    upstream.mode = "normal"

    async def crossing_then_three_more() -> tuple[list[str], list[tuple]]:
        first = await api_session(platform, created["api_key"])
        assert json.loads(await first.recv())["type"] == "session.created"
        await first.send(json.dumps({"type": "response.create"}))  # $0.0132 > the $0.01 cap
        events = await events_until_closed(first)
        later = []
        for _ in range(3):
            connection = await api_session(platform, created["api_key"])
            event = json.loads(await asyncio.wait_for(connection.recv(), 10))
            await events_until_closed(connection)
            later.append((event["type"], event.get("error", {}).get("code"), connection.close_code))
        return [event["type"] for event in events], later

    connections_before = upstream.connections
    types, later = asyncio.run(crossing_then_three_more())
    # The crossing response finishes and is billed; then the session ends.
    assert types[-2:] == ["response.done", "error"]
    assert later == [("error", "budget_exhausted", 4402)] * 3
    assert upstream.connections == connections_before + 1  # none of the three went upstream


def test_a_widget_session_after_its_keys_cap_gets_no_vad_answer(capped):
    platform, upstream, created = capped
    upstream.mode = "vad"
    # Minted while the key's cap still had room; then its other sessions spent it.
    token = platform.shell(MINT.format(key=created["widget_key"])).splitlines()[-1]
    platform.shell(
        SPEND.format(tenant=created["tenant"], agent=created["shop"], key=created["widget_key_id"])
    )

    async def speak() -> tuple[list[dict], int | None]:
        connection = await websockets.connect(
            f"{platform.ws_url}/ws/widget/",
            subprotocols=["realtime", f"vp-token.{token}"],
            origin=SHOP,
            open_timeout=20,
        )
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(10):  # the user speaks; server VAD would answer
                await connection.send(
                    json.dumps({"type": "input_audio_buffer.append", "audio": SPEECH})
                )
        return await events_until_closed(connection), connection.close_code

    connections_before = upstream.connections
    events, close_code = asyncio.run(speak())
    upstream.mode = "normal"
    assert [event["type"] for event in events] == ["error"]
    assert events[0]["error"]["code"] == "budget_exhausted"
    assert close_code == 4402
    assert upstream.connections == connections_before  # no upstream: nothing served or billed
    keys = platform.shell(USAGE_KEYS).splitlines()[-1]
    assert "resp_vad" not in keys
