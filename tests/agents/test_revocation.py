"""Revoking a key ends the live sessions that came in with it (issue 13.6): an API key's own
sockets, the sockets of client secrets it minted, and a widget key's sockets."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from agents import tokens
from tenants.services import api_key_issue, api_key_revoke, widget_key_revoke
from tests.agents.test_widget_socket import SOCKET_TIMEOUT, mint, receive, sessions, widget_socket
from tests.agents.test_widget_socket import shop as shop  # noqa: PLC0414 - the fixture

transactional = pytest.mark.django_db(transaction=True)


async def open_socket(communicator: WebsocketCommunicator) -> None:
    connected, _ = await communicator.connect(timeout=SOCKET_TIMEOUT)
    assert connected
    assert (await receive(communicator))["type"] == "session.created"


async def ended_by_revocation(communicator: WebsocketCommunicator, index: int) -> None:
    """The socket gets the error that says why and its close; session ``index`` (in the
    order they were opened) is recorded as ended."""
    events = []
    while True:
        output = await communicator.receive_output(timeout=SOCKET_TIMEOUT)
        if output["type"] == "websocket.close":
            break
        events.append(output)
    errors = [e for e in events if '"type":"error"' in e.get("text", "").replace(" ", "")]
    assert errors and "revoked" in errors[-1]["text"]
    assert output["code"] == 4000
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while (await sessions())[index].ended_at is None:
        assert time.monotonic() < deadline, "the session's end was not recorded"
        await asyncio.sleep(0.02)
    assert (await sessions())[index].end_reason == "ended_by_admin"


def api_socket(raw_key: str) -> WebsocketCommunicator:
    from voiceplatform.asgi import application

    return WebsocketCommunicator(
        application, "/v1/realtime", headers=[(b"authorization", f"Bearer {raw_key}".encode())]
    )


@transactional
async def test_revoking_an_api_key_ends_its_sockets_and_its_client_secrets_sockets(shop):
    api_key, raw_key = await sync_to_async(api_key_issue)(
        tenant=shop["world"].tenant_a, name="backend", default_agent=shop["agent"]
    )
    secret = await sync_to_async(tokens.ephemeral_key_mint)(
        api_key=api_key, agent_id=shop["agent"].pk
    )
    direct = api_socket(raw_key)
    browser = widget_socket(secret.value, prefix="openai-insecure-api-key.")
    await open_socket(direct)
    await open_socket(browser)
    await sync_to_async(api_key_revoke)(api_key=api_key)
    try:
        await ended_by_revocation(direct, 0)
        await ended_by_revocation(browser, 1)
    finally:
        await direct.disconnect()
        await browser.disconnect()


@transactional
async def test_revoking_a_widget_key_ends_its_live_widget_sessions(shop):
    minted = await mint(shop["key"].key)
    communicator = widget_socket(minted["token"])
    await open_socket(communicator)
    other = await mint(shop["unbound_key"].key, agent=shop["agent"].pk)
    untouched = widget_socket(other["token"])
    await open_socket(untouched)
    await sync_to_async(widget_key_revoke)(widget_key=shop["key"])
    try:
        await ended_by_revocation(communicator, 0)
        # A session of another key goes on.
        await untouched.send_json_to({"type": "totally.unknown", "event_id": "ping"})
        assert (await receive(untouched))["error"]["code"] == "event_not_allowed"
    finally:
        await communicator.disconnect()
        await untouched.disconnect()


@transactional
async def test_a_refusal_is_logged_with_its_code_and_tenant(shop, caplog):
    minted = await mint(shop["key"].key)
    first = widget_socket(minted["token"])
    await open_socket(first)
    await first.disconnect()
    replay = widget_socket(minted["token"])
    with caplog.at_level("INFO", logger="agents.consumers"):
        connected, _ = await replay.connect(timeout=SOCKET_TIMEOUT)
        assert connected and (await receive(replay))["error"]["code"] == "token_used"
    await replay.disconnect()
    tenant_id = shop["world"].tenant_a.pk
    assert any(
        record.getMessage().startswith(f"widget socket refused: token_used (tenant {tenant_id},")
        for record in caplog.records
    ), [record.getMessage() for record in caplog.records]
