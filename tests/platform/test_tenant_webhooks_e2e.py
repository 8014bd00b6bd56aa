"""Tenant webhooks end to end: a session through a real Daphne process (embedded mode) and a
scripted upstream ends, and a real receiver gets ``session.started`` and ``session.ended``
(with the transcript), signed so that the README's code accepts them.

The deliveries are made by the server process itself (the lifecycle signals); they are sent by
the sweep the beat runs, here run once in a ``manage.py shell`` of the platform's database.
"""

from __future__ import annotations

import asyncio
import json

from tests.agents.test_tenant_webhooks import Receiver, readme_verifier
from tests.servers import Platform, api_connect, base_environ
from tests.upstreams import ScriptedUpstream, scripted_agent_create

ENDPOINT_SETUP = r"""
import json
from agents import webhooks
from tenants.models import Tenant
from tenants.scoping import scopes_disabled
with scopes_disabled():
    tenant = Tenant.objects.get(slug="demo")
webhooks.webhook_endpoint_create(tenant=tenant, actor=None, fields={{
    "url": {url!r}, "events": ["session.started", "session.ended"]}})
print(json.dumps({{"secret": tenant.webhook_signing_secret}}))
"""

# Wait (in the platform's process world) until both deliveries of the session exist, then send
# what is due, as the beat's sweep does.
SWEEP = r"""
import json, time
from agents.models import WebhookDelivery
from agents.webhooks import deliveries_sweep
from tenants.scoping import scopes_disabled
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    with scopes_disabled():
        if WebhookDelivery.objects.filter(event_type="session.ended").exists():
            break
    time.sleep(0.2)
print(json.dumps({"sent": deliveries_sweep(inline=True)}))
"""


class TalkingUpstream(ScriptedUpstream):
    """Echoes the client's message as a conversation item and answers with a spoken one."""

    async def _talk(self, connection) -> None:
        number = 0
        async for message in connection:
            event = json.loads(message)
            if event.get("type") == "conversation.item.create":
                item = {**event["item"], "id": "item_user_1", "status": "completed"}
                await connection.send(json.dumps({"type": "conversation.item.added",
                                                  "event_id": "e", "item": item}))  # fmt: skip
            elif event.get("type") == "response.create":
                number += 1
                spoken = {"type": "output_audio", "transcript": "Order 42 shipped Monday."}
                item = {"id": f"item_answer_{number}", "type": "message", "role": "assistant",
                        "status": "completed", "content": [spoken]}  # fmt: skip
                await connection.send(json.dumps({"type": "response.output_item.done",
                                                  "event_id": "e", "response_id": f"r{number}",
                                                  "output_index": 0, "item": item}))  # fmt: skip
                await self._respond(connection, f"resp_{self.connections}_{number}")


async def one_turn(platform: Platform, api_key: str) -> list[str]:
    types = []
    async with api_connect(platform.ws_url, api_key) as connection:
        await connection.send(json.dumps({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "Where is order 42?"}]}}))  # fmt: skip
        await connection.send(json.dumps({"type": "response.create"}))
        while "response.done" not in types:
            types.append(json.loads(await asyncio.wait_for(connection.recv(), 10))["type"])
    return types


def test_a_session_through_daphne_is_delivered_started_and_ended_with_its_transcript(tmp_path):
    upstream = TalkingUpstream(mode="talk")
    receiver = Receiver()
    platform = None
    try:
        platform = Platform(base_environ(tmp_path, **upstream.environ), tmp_path)
        created = scripted_agent_create(platform)
        setup = ENDPOINT_SETUP.format(url=receiver.url + "/hook")
        secret = json.loads(platform.shell(setup).splitlines()[-1])["secret"]
        types = asyncio.run(one_turn(platform, created["api_key"]))
        assert "conversation.item.added" in types
        assert json.loads(platform.shell(SWEEP).splitlines()[-1]) == {"sent": 2}
    finally:
        if platform is not None:
            platform.stop()
        upstream.stop()
        receiver.close()
    verify = readme_verifier()
    events = [verify(secret, headers, body) for _, headers, body in receiver.requests]
    assert [event["type"] for event in events] == ["session.started", "session.ended"]
    ended = events[1]
    assert ended["session"]["id"] == events[0]["session"]["id"]
    assert ended["session"]["end_reason"] == "client_closed"
    assert [(item["role"], item["text"]) for item in ended["transcript"]] == [
        ("user", "Where is order 42?"), ("assistant", "Order 42 shipped Monday."),
    ]  # fmt: skip
    assert ended["agent"]["id"] == created["agent_id"]
    assert float(ended["cost"]["amount"]) > 0  # the scripted upstream's usage, priced
