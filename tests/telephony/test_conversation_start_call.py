"""A phone call's start on the local engine: the voice webhook passes the call's declared prompt
variables (the caller's number, the webhook URL's ``var_*``) as stream parameters, and the agent
greets first with its filled first message, after the recording notice when recorded."""

from __future__ import annotations

import asyncio
import base64
import time
import xml.etree.ElementTree as ET

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from agents.models import Agent, Recording, TranscriptItem
from tenants.scoping import scopes_disabled
from tests.upstreams import ScriptedUpstream

from .conftest import (
    ACCOUNT_SID,
    AUTH_TOKEN_A,
    CALL_SID,
    CALLER,
    TwilioStream,
    call_params,
    signed_headers,
)
from .test_media_stream import (
    RecordingConsumer,  # noqa: F401 - the application fixture's consumer
    _warm_engines,  # noqa: F401
    application,  # noqa: F401
    client_events,
    ended_session,
    receive_through,
    transactional,
)

pytestmark = [pytest.mark.usefixtures("phone_urls")]
WEBHOOK = "http://testserver/twilio/voice?var_shop=Acme%20Books&var_secret=x"


@sync_to_async
def greeting_agent(agent_id: int, **fields) -> None:
    with scopes_disabled():
        Agent.objects.filter(pk=agent_id).update(
            speaks_first="agent",
            first_message="Thanks for calling {{shop}}. You are calling from {{caller_number}}.",
            variables={"shop": "the shop", "caller_number": "an unknown number"},
            **fields,
        )


@sync_to_async
def stream_parameters() -> dict[str, str]:
    params = call_params()
    response = Client().post(
        "/twilio/voice?var_shop=Acme%20Books&var_secret=x",
        params,
        headers=signed_headers(params, url=WEBHOOK),
    )
    assert response.status_code == 200, response.content
    stream = ET.fromstring(response.content).find("./Connect/Stream")
    return {parameter.attrib["name"]: parameter.attrib["value"] for parameter in stream}


@sync_to_async
def assistant_lines(session_id: int) -> list[str]:
    with scopes_disabled():
        return list(
            TranscriptItem.objects.filter(session_id=session_id, role="assistant")
            .order_by("sequence")
            .values_list("text", flat=True)
        )


async def call(application, parameters):  # noqa: F811 - the fixture imported above
    from channels.testing import WebsocketCommunicator

    twilio = TwilioStream()
    communicator = WebsocketCommunicator(application, "/twilio/stream/")
    connected, _ = await communicator.connect(timeout=20)
    assert connected
    await communicator.send_to(text_data=twilio.connected())
    await communicator.send_to(text_data=twilio.start(parameters))
    return communicator, twilio


@transactional
@pytest.mark.parametrize("recorded", [False, True])
async def test_the_agent_greets_the_caller_with_its_filled_first_message(
    application,  # noqa: F811
    phone,
    recorded,
):
    fields = {"recording_enabled": True, "recording_notice": "This call is recorded."}
    await greeting_agent(phone.agent.pk, **(fields if recorded else {}))
    parameters = await stream_parameters()
    # Declared names only: var_secret is not the agent's, so it never reaches Twilio.
    assert parameters["var_shop"] == "Acme Books"
    assert parameters["var_caller_number"] == CALLER
    assert "var_secret" not in parameters
    communicator, twilio = await call(application, parameters)
    try:
        greeting = await receive_through(communicator, "response.done")
        assert any(message["event"] == "media" for message in greeting)  # it was said
        await communicator.send_to(text_data=twilio.stop())
        await communicator.receive_output(timeout=20)
    finally:
        await communicator.disconnect()
    session = await ended_session()
    expected = f"Thanks for calling Acme Books. You are calling from {CALLER}."
    if recorded:
        expected = "This call is recorded. " + expected
    assert (await assistant_lines(session.pk))[:1] == [expected]
    assert client_events() == []  # the opening is the platform's own event, not Twilio's
    if recorded:  # the recording's writer finishes before the test's database goes away
        deadline = time.monotonic() + 30
        while not await recording_stored(session.pk):
            assert time.monotonic() < deadline, "the recording was not stored"
            await asyncio.sleep(0.1)


@sync_to_async
def recording_stored(session_id: int) -> bool:
    with scopes_disabled():
        return Recording.objects.filter(session_id=session_id).exclude(status="recording").exists()


@pytest.fixture
def fake_twilio(settings):
    from tests.agents.test_conversation_start import FakeTwilio

    twilio = FakeTwilio()
    settings.VP_TWILIO_API_URL = twilio.url
    yield twilio
    twilio.shutdown()


@pytest.fixture
def scripted_upstream(settings):
    upstream = ScriptedUpstream("goodbye")
    upstream.farewell_tool = "transfer_call"
    for name, value in upstream.environ.items():
        setattr(settings, name, value)
    yield upstream
    upstream.stop()


@sync_to_async
def transferring_agent(agent_id: int) -> None:
    with scopes_disabled():
        Agent.objects.filter(pk=agent_id).update(
            provider="openai", speaks_first="agent", first_message="Let me put you through.",
            transfer_call_enabled=True, transfer_number="+14155550111",
        )  # fmt: skip


@transactional
async def test_the_agent_transfers_the_call_through_twilio(
    application,  # noqa: F811
    phone,
    fake_twilio,
    scripted_upstream,
):
    await transferring_agent(phone.agent.pk)
    parameters = await stream_parameters()
    communicator, _ = await call(application, parameters)
    try:
        closed = None
        while closed is None:
            output = await communicator.receive_output(timeout=20)
            if output["type"] == "websocket.close":
                closed = output
    finally:
        await communicator.disconnect()
    # The stream ends normally once Twilio has the call (<Dial> the agent's number).
    assert (closed["code"], closed["reason"]) == (1000, "call_transferred")
    ((path, authorization, form),) = fake_twilio.requests
    assert path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{CALL_SID}.json"
    expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN_A}".encode()).decode()
    assert authorization == f"Basic {expected}"
    assert "<Dial>+14155550111</Dial>" in form["Twiml"][0]
    session = await ended_session()
    assert session.end_reason == "transferred"
    # The upstream was offered the tool as a plain function (how it runs stays here).
    (tool,) = scripted_upstream.received[1][0]["session"]["tools"]
    assert tool["name"] == "transfer_call" and "execution" not in tool
