"""The API socket against a scripted fake of OpenAI's Realtime endpoint (real websockets)."""

import asyncio
import contextlib
import json

import pytest
import websockets
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.db import OperationalError
from django.utils import timezone

from agents.models import Agent, Session
from agents.services import end_user_hash
from billing.models import UsageEvent
from tenants import services
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope
from voiceplatform.asgi import application

TENANT_KEY = "sk-tenant-" + "k" * 30
BIG = 3_500_000


class FakeOpenAI:
    """Plays a script per connection; records request headers and received frames."""

    def __init__(self, script):
        self.script = script
        self.headers = []
        self.received = []
        self.server = None

    async def handler(self, connection):
        self.headers.append(connection.request.headers)
        self.path = connection.request.path
        session_id = f"sess_up_{len(self.headers)}"
        await connection.send(
            json.dumps({"type": "session.created", "session": {"id": session_id}})
        )
        await self.script(self, connection)

    async def __aenter__(self):
        self.server = await websockets.serve(self.handler, "127.0.0.1", 0, max_size=None)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def receive(self, connection):
        message = await connection.recv()
        self.received.append(json.loads(message))
        event = self.received[-1]
        if event["type"] == "session.update":  # as OpenAI: the configured session comes back
            session = {**event["session"], "id": f"sess_up_{len(self.headers)}"}
            await connection.send(json.dumps({"type": "session.updated", "session": session}))
        return event


@pytest.fixture
def openai_agent(db, settings):
    owner = services.user_get_or_create(email="o@example.com", password="pw-123456789")
    tenant = services.tenant_create(slug="acme", name="Acme", owner=owner)
    services.provider_credential_set(tenant=tenant, secret=TENANT_KEY)
    with tenant_scope(tenant):
        agent = Agent.objects.create(tenant=tenant, name="Support", provider="openai",
                                     instructions="Be kind.", turn_detection="none")  # fmt: skip
    _, raw_key = services.api_key_issue(tenant=tenant, name="backend", default_agent=agent)
    settings.OPENAI_API_KEY = "sk-platform-" + "p" * 30
    return tenant, agent, raw_key


async def connect(raw_key, port, settings, query="?model=gpt-realtime-2&user=alice"):
    settings.VP_OPENAI_REALTIME_URL = f"ws://127.0.0.1:{port}/v1/realtime"
    communicator = WebsocketCommunicator(
        application,
        f"/v1/realtime{query}",
        headers=[(b"authorization", f"Bearer {raw_key}".encode())],
    )
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(communicator, event_type, timeout=5):
    seen = []
    while True:
        event = json.loads(await communicator.receive_from(timeout=timeout))
        seen.append(event)
        if event["type"] == event_type:
            return seen


def stored():
    with scopes_disabled():
        return (
            list(Session.objects.values_list("end_reason", "upstream_session_ids")),
            list(UsageEvent.objects.values_list("upstream_response_id", "status", "provider")),
        )


@pytest.mark.django_db(transaction=True)
async def test_tenant_key_safety_identifier_and_a_3_5_mb_event(openai_agent, settings):
    tenant, agent, raw_key = openai_agent

    async def script(fake, connection):
        await fake.receive(connection)  # the platform's session.update
        item = {"id": "item_big", "type": "message", "role": "user",
                "content": [{"type": "input_audio", "audio": "A" * BIG}]}  # fmt: skip
        await connection.send(json.dumps({"type": "conversation.item.added", "item": item}))
        await fake.receive(connection)
        await connection.send(json.dumps({"type": "response.done", "response": {
            "id": "resp_1", "status": "completed", "usage": {
                "total_tokens": 150, "input_tokens": 100, "output_tokens": 50,
                "input_token_details": {"text_tokens": 20, "audio_tokens": 80,
                                        "cached_tokens": 64, "cached_tokens_details": {
                                            "text_tokens": 0, "audio_tokens": 64}},
                "output_token_details": {"text_tokens": 10, "audio_tokens": 40}}}}))  # fmt: skip
        await connection.wait_closed()

    async with FakeOpenAI(script) as fake:
        communicator = await connect(raw_key, fake.port, settings)
        try:
            await receive_until(communicator, "session.created")
            big = json.loads(await communicator.receive_from(timeout=5))
            assert big["type"] == "conversation.item.added"
            # Larger than the client socket may carry: the item arrives without its audio (the
            # client has it from the deltas) rather than killing the relay.
            assert big["item"]["id"] == "item_big"
            assert big["item"]["content"] == [{"type": "input_audio", "audio": None}]
            await communicator.send_to(text_data=json.dumps({"type": "response.create"}))
            await receive_until(communicator, "response.done")
        finally:
            await communicator.disconnect()

    headers = fake.headers[0]
    assert headers["Authorization"] == f"Bearer {TENANT_KEY}"  # the tenant's own key wins
    assert headers["OpenAI-Safety-Identifier"] == end_user_hash(
        tenant_id=tenant.pk, end_user="alice"
    )
    assert fake.path == "/v1/realtime?model=gpt-realtime-2"
    assert fake.received[0]["type"] == "session.update"
    assert fake.received[0]["session"]["instructions"] == "Be kind."
    sessions, usage = await database_sync_to_async(stored)()
    assert sessions == [("client_closed", ["sess_up_1"])]
    assert usage == [("resp_1", "completed", "openai")]
    with scopes_disabled():
        event = await database_sync_to_async(UsageEvent.objects.get)()
    assert (event.input_audio_tokens, event.cached_audio_tokens, event.output_audio_tokens) == (
        80,
        64,
        40,
    )


@pytest.mark.django_db(transaction=True)
async def test_upstream_drop_mid_response_without_reconnects(openai_agent, settings):
    _, _, raw_key = openai_agent
    settings.VP_RECONNECT_ATTEMPTS = 0

    async def script(fake, connection):
        await fake.receive(connection)
        await connection.send(json.dumps({"type": "response.done", "response": {
            "id": "resp_ok", "status": "completed", "usage": {"total_tokens": 1}}}))  # fmt: skip
        # The same response.done again (a redelivery) must not count twice.
        await connection.send(json.dumps({"type": "response.done", "response": {
            "id": "resp_ok", "status": "completed", "usage": {"total_tokens": 1}}}))  # fmt: skip
        await connection.send(
            json.dumps({"type": "response.created", "response": {"id": "resp_cut"}})
        )
        await connection.send(json.dumps({"type": "response.output_audio.delta",
                                          "response_id": "resp_cut", "delta": "AAAA"}))  # fmt: skip
        connection.transport.abort()  # no close frame: a dropped connection

    async with FakeOpenAI(script) as fake:
        communicator = await connect(raw_key, fake.port, settings)
        try:
            events = await receive_until(communicator, "error")
            assert events[-1]["error"]["code"] == "upstream_closed"
            output = await communicator.receive_output(timeout=5)
            assert output == {"type": "websocket.close", "code": 4011, "reason": "upstream_closed"}
        finally:
            await communicator.disconnect()
    sessions: list = [("", [])]
    usage: list = []
    for _ in range(50):
        try:
            sessions, usage = await database_sync_to_async(stored)()
        except OperationalError as error:
            # The in-memory test database (shared-cache SQLite) reports the journal writing the
            # usage meanwhile as an error instead of waiting: read again.
            if "locked" not in str(error):
                raise
        if sessions[0][0]:
            break
        await asyncio.sleep(0.05)
    assert sessions == [("upstream_closed", ["sess_up_1"])]
    assert usage == [("resp_ok", "completed", "openai")]


@pytest.mark.django_db(transaction=True)
async def test_session_expired_from_upstream_continues_in_a_new_segment(openai_agent, settings):
    _, _, raw_key = openai_agent
    connections = []

    async def script(fake, connection):
        connections.append(connection)
        await fake.receive(connection)
        if len(connections) == 1:
            await connection.send(json.dumps({"type": "error", "error": {
                "type": "invalid_request_error", "code": "session_expired",
                "message": "Your session hit the maximum duration of 60 minutes."}}))  # fmt: skip
            await connection.close(1001, "session expired")
            return
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:  # the reseed, then the client's barrier
                event = await fake.receive(connection)
                if event["type"] == "input_audio_buffer.clear":
                    await connection.send(json.dumps({"type": "input_audio_buffer.cleared"}))

    async with FakeOpenAI(script) as fake:
        communicator = await connect(raw_key, fake.port, settings)
        try:
            events = await receive_until(communicator, "session.created")
            assert [event["type"] for event in events] == ["session.created"]
            async with asyncio.timeout(10):
                while len(fake.received) < 2:
                    await asyncio.sleep(0.02)
            # No error, no second session.created or updated: the client's session goes on. (A
            # clear answered by the new upstream comes after anything the swap sent the client.)
            await communicator.send_json_to({"type": "input_audio_buffer.clear"})
            events = await receive_until(communicator, "input_audio_buffer.cleared")
            assert [event["type"] for event in events] == ["input_audio_buffer.cleared"]
        finally:
            await communicator.disconnect()
    reseed = fake.received[1]
    assert reseed["type"] == "session.update"
    assert (
        "This conversation continues from an earlier session" in reseed["session"]["instructions"]
    )
    assert len(connections) == 2

    def segments():
        from agents.models import SessionSegment

        with scopes_disabled():
            return list(SessionSegment.objects.order_by("index").values_list("index", "reason"))

    for _ in range(50):
        rows = await database_sync_to_async(segments)()
        if len(rows) == 2:
            break
        await asyncio.sleep(0.05)
    assert rows == [(0, "initial"), (1, "session_expired")]


@pytest.mark.django_db(transaction=True)
async def test_unreachable_upstream_is_a_clear_error(openai_agent, settings):
    _, _, raw_key = openai_agent
    communicator = await connect(raw_key, 9, settings)  # nothing listens on port 9
    try:
        event = json.loads(await communicator.receive_from(timeout=15))
        assert event["error"]["code"] == "upstream_unavailable"
        output = await communicator.receive_output(timeout=5)
        assert (output["code"], output["reason"]) == (4013, "upstream_unavailable")
    finally:
        await communicator.disconnect()
    sessions, usage = await database_sync_to_async(stored)()
    assert sessions == [("upstream_error", [])]
    assert usage == []


async def refused(raw_key, query=""):
    communicator = WebsocketCommunicator(
        application,
        f"/v1/realtime{query}",
        headers=[(b"authorization", f"Bearer {raw_key}".encode())],
    )
    connected, _ = await communicator.connect()
    assert connected  # accepted only to say why
    event = json.loads(await communicator.receive_from(timeout=5))
    output = await communicator.receive_output(timeout=5)
    await communicator.disconnect()
    return event["error"]["code"], output["code"]


@pytest.mark.django_db(transaction=True)
async def test_admission_refusals(openai_agent, settings):
    tenant, agent, raw_key = openai_agent

    def update(**fields):
        Tenant.objects.filter(pk=tenant.pk).update(**fields)

    await database_sync_to_async(update)(status="suspended")
    assert await refused(raw_key) == ("tenant_suspended", 4403)
    await database_sync_to_async(update)(status="active", max_concurrent_sessions=0)
    assert await refused(raw_key) == ("too_many_sessions", 4429)

    def spend():
        with tenant_scope(tenant):
            UsageEvent.objects.create(
                tenant=tenant,
                agent=agent,
                model="gpt-realtime-2",
                upstream_response_id="r1",
                output_audio_tokens=1_000_000,
                occurred_at=timezone.now(),
            )
        update(max_concurrent_sessions=10, monthly_budget_usd="64.00")

    await database_sync_to_async(spend)()
    assert await refused(raw_key) == ("budget_exhausted", 4402)
    assert await refused("vp_live_nope") == ("invalid_api_key", 4401)
    assert await refused(raw_key, "?agent=abc") == ("agent_not_found", 4404)
    with scopes_disabled():
        assert await database_sync_to_async(Session.objects.count)() == 0


@pytest.mark.django_db
def test_usage_report_command(openai_agent, capsys):
    tenant, agent, _ = openai_agent
    with tenant_scope(tenant):
        for index in range(2):
            UsageEvent.objects.create(
                tenant=tenant, agent=agent, model="gpt-realtime-2",
                upstream_response_id=f"r{index}", input_audio_tokens=100, cached_audio_tokens=40,
                output_audio_tokens=7, occurred_at=timezone.now(),
            )  # fmt: skip
    call_command("usage_report", "--tenant", "acme", "--json")
    report = json.loads(capsys.readouterr().out)
    totals = report["models"]["gpt-realtime-2"]
    assert (totals["responses"], totals["input_audio_tokens"], totals["cached_audio_tokens"]) == (
        2,
        200,
        80,
    )
    assert totals["output_audio_tokens"] == 14
    call_command("usage_report", "--tenant", "acme")
    assert "input_audio_tokens" in capsys.readouterr().out


@pytest.mark.django_db
def test_sweep_ends_sessions_without_heartbeat(openai_agent):
    from datetime import timedelta

    from agents.tasks import sessions_sweep_abandoned

    tenant, agent, _ = openai_agent
    with tenant_scope(tenant):
        stale = Session.objects.create(tenant=tenant, agent=agent, channel="api", model="m")
        live = Session.objects.create(tenant=tenant, agent=agent, channel="api", model="m")
        Session.objects.filter(pk=stale.pk).update(
            heartbeat_at=timezone.now() - timedelta(minutes=5)
        )
    assert sessions_sweep_abandoned() == 1
    assert sessions_sweep_abandoned() == 0
    with tenant_scope(tenant):
        assert Session.objects.get(pk=stale.pk).end_reason == "abandoned"
        assert Session.objects.get(pk=live.pk).ended_at is None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("status", "code", "close_code"),
    [(401, "upstream_auth_failed", 4011), (429, "upstream_rate_limited", 4013)],
)
async def test_upstream_refusals_are_final_and_named(
    openai_agent, settings, status, code, close_code
):
    _, _, raw_key = openai_agent

    def refuse(connection, request):
        return connection.respond(status, "no\n")

    server = await websockets.serve(lambda connection: None, "127.0.0.1", 0, process_request=refuse)
    port = server.sockets[0].getsockname()[1]
    try:
        communicator = await connect(raw_key, port, settings)
        event = json.loads(await communicator.receive_from(timeout=10))
        output = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
    finally:
        server.close()
        await server.wait_closed()
    assert event["error"]["code"] == code
    assert (output["code"], output["reason"]) == (close_code, code)
