"""A webhook tool end to end on the local engine: named by the user, run by the platform."""

import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from agents.configuration import agent_create
from agents.models import TranscriptItem
from billing.models import UsageEvent
from tenants import services
from tenants.scoping import tenant_scope
from tests.agents.test_tools import ToolServer
from voiceplatform.asgi import application


@pytest.fixture
def tool_server():
    server = ToolServer()
    yield server
    server.close()


def setup(path_url, timeout=5):
    owner = services.user_get_or_create(email="o@example.com", password="pw-123456789")
    tenant = services.tenant_create(slug="acme", name="Acme", owner=owner)
    agent = agent_create(
        tenant=tenant, actor=owner,
        fields={"name": "Orders", "provider": "local", "turn_detection": "none", "tools": [{
            "name": "lookup_order", "description": "Look up an order", "execution": "webhook",
            "webhook_url": path_url, "timeout_seconds": timeout,
            "parameters": {"type": "object", "properties": {"order_number": {"type": "string"}}},
        }]},
    )  # fmt: skip
    _, raw_key = services.api_key_issue(tenant=tenant, name="b", default_agent=agent)
    return tenant, raw_key


async def turn(raw_key, text):
    communicator = WebsocketCommunicator(
        application, "/v1/realtime", headers=[(b"authorization", f"Bearer {raw_key}".encode())]
    )
    assert (await communicator.connect())[0]
    events = []
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    await communicator.send_json_to({"type": "conversation.item.create", "item": item})
    await communicator.send_json_to({"type": "response.create"})
    done = 0
    while done < 2:  # the call's response, then the answer's
        event = json.loads(await communicator.receive_from(timeout=20))
        events.append(event)
        done += event["type"] == "response.done"
    await communicator.disconnect()
    return events


def stored(tenant):
    with tenant_scope(tenant):
        items = list(
            TranscriptItem.objects.order_by("sequence").values("role", "kind", "text", "data")
        )
        usage = UsageEvent.objects.count()
    return items, usage


@pytest.mark.django_db(transaction=True)
async def test_user_names_the_tool_the_platform_calls_the_webhook_and_the_answer_is_spoken(
    tool_server, settings
):
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = True
    tenant, raw_key = await database_sync_to_async(setup)(tool_server.url + "/ok")
    events = await turn(raw_key, "please lookup order one two three")
    transcripts = [
        e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done"
    ]
    assert transcripts == ["The lookup order tool returned: status shipped, eta Friday."]
    assert any(e["type"] == "response.output_audio.delta" for e in events)  # spoken
    _, headers, body = tool_server.requests[0]
    assert json.loads(body)["arguments"] == {"order_number": "123"}
    assert headers["X-VP-Signature"].startswith("v1=")
    items, usage = await database_sync_to_async(stored)(tenant)
    assert [(i["role"], i["kind"]) for i in items] == [
        ("user", "message"), ("assistant", "function_call"), ("tool", "function_call_output"),
        ("assistant", "message"),
    ]  # fmt: skip
    assert items[1]["data"]["arguments"] == '{"order_number": "123"}'
    assert json.loads(items[2]["text"]) == {"status": "shipped", "eta": "Friday"}
    assert items[2]["data"]["latency_ms"] >= 0 and "error" not in items[2]["data"]
    assert usage == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "timeout", "kind"), [("/slow", 0.3, "timeout"), ("/fail", 5, "http_error")]
)
async def test_timeouts_and_errors_reach_the_model_as_an_error_output(
    tool_server, settings, path, timeout, kind
):
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = True
    tenant, raw_key = await database_sync_to_async(setup)(tool_server.url + path, timeout)
    events = await turn(raw_key, "lookup order four")
    assert [e["response"]["status"] for e in events if e["type"] == "response.done"] == [
        "completed"
    ] * 2
    items, _ = await database_sync_to_async(stored)(tenant)
    output = next(i for i in items if i["kind"] == "function_call_output")
    assert json.loads(output["text"])["error"]["type"] == kind
    assert output["data"]["error"] == kind
    assert items[-1]["role"] == "assistant" and "lookup order tool" in items[-1]["text"]
