"""``/twilio/stream/`` against the local engine, with Twilio's side played from μ-law frames in
Twilio's message format: a turn completes, barge-in clears Twilio and truncates upstream at what
the caller heard, the session is recorded with channel "phone", tokens are single-use."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import xml.etree.ElementTree as ET

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import path

from agents.models import Session, TranscriptItem
from agents.realtime import speech
from agents.services import end_user_hash
from agents.telephony_consumers import TwilioMediaConsumer
from agents.telephony_views import phone_caller_end_user
from billing.models import UsageEvent
from tenants.models import ClientToken
from tenants.scoping import scopes_disabled
from tests.waiting import until

from .conftest import CALLER, STREAM_SID, TwilioStream, call_params, signed_headers

TIMEOUT = 20
transactional = pytest.mark.django_db(transaction=True)
pytestmark = [pytest.mark.usefixtures("phone_urls")]


class RecordingConsumer(TwilioMediaConsumer):
    """The phone consumer, also keeping every upstream event the bridge hands it."""

    upstream_events: list[str] = []
    client_events: list[str] = []
    handled = 0  # how many of upstream_events the consumer has finished sending on

    async def send_text(self, text: str) -> None:
        RecordingConsumer.upstream_events.append(text)
        await super().send_text(text)
        RecordingConsumer.handled += 1

    async def _start_bridge(self, access, session) -> None:
        await super()._start_bridge(access, session)
        if self.bridge is None:
            return
        relay = self.bridge.from_client

        async def recording(text=None, data=None):
            if text is not None and '"input_audio_buffer.append"' not in text:
                RecordingConsumer.client_events.append(text)
            await relay(text, data)

        self.bridge.from_client = recording


@pytest.fixture(scope="module", autouse=True)
def _warm_engines() -> None:
    speech.warm_up()


@pytest.fixture
def application():
    from voiceplatform.routing import websocket_urlpatterns

    RecordingConsumer.upstream_events = []
    RecordingConsumer.client_events = []
    RecordingConsumer.handled = 0
    return URLRouter([path("twilio/stream/", RecordingConsumer.as_asgi()), *websocket_urlpatterns])


@sync_to_async
def webhook_token() -> str:
    """Twilio's call to the voice webhook; the stream token from its TwiML."""
    params = call_params()
    response = Client().post("/twilio/voice", params, headers=signed_headers(params))
    assert response.status_code == 200, response.content
    parameter = ET.fromstring(response.content).find("./Connect/Stream/Parameter")
    assert parameter.attrib["name"] == "token"
    return parameter.attrib["value"]


async def open_stream(application, token: str) -> tuple[WebsocketCommunicator, TwilioStream]:
    twilio = TwilioStream()
    communicator = WebsocketCommunicator(application, "/twilio/stream/")
    connected, subprotocol = await communicator.connect(timeout=TIMEOUT)
    assert connected and subprotocol is None
    await communicator.send_to(text_data=twilio.connected())
    await communicator.send_to(text_data=twilio.start({"token": token}))
    return communicator, twilio


async def send_audio(communicator: WebsocketCommunicator, twilio: TwilioStream, ulaw: bytes):
    for message in twilio.media(ulaw):
        await communicator.send_to(text_data=message)


async def receive_through(
    communicator: WebsocketCommunicator, event_type: str, count: int = 1
) -> list[dict]:
    """Messages to Twilio up to the moment the consumer has finished handling the bridge's
    ``count``-th ``event_type`` (everything it sent for earlier events is queued by then)."""

    def handled() -> bool:
        done = RecordingConsumer.upstream_events[: RecordingConsumer.handled]
        return sum(json.loads(text).get("type") == event_type for text in done) >= count

    await until(handled, f"the consumer to handle {event_type} #{count}", timeout=TIMEOUT)
    messages = []
    # receive_nothing(timeout=0) only looks at the queue; a timed-out receive would cancel
    # the application.
    while not await communicator.receive_nothing(timeout=0):
        messages.append(json.loads(await communicator.receive_from()))
    return messages


def media_bytes(messages: list[dict]) -> bytes:
    return b"".join(
        base64.b64decode(message["media"]["payload"])
        for message in messages
        if message["event"] == "media"
    )


def assert_twilio_shaped(messages: list[dict]) -> None:
    """Only Twilio's own messages reach Twilio, each for this stream (no Realtime event)."""
    for message in messages:
        assert message["event"] in ("media", "mark", "clear"), message
        assert message["streamSid"] == STREAM_SID
        if message["event"] == "media":
            assert set(message) == {"event", "streamSid", "media"}
            assert set(message["media"]) == {"payload"}
        elif message["event"] == "mark":
            assert set(message["mark"]) == {"name"}


def client_events() -> list[dict]:
    """What the consumer sent upstream besides the caller's audio."""
    return [json.loads(text) for text in RecordingConsumer.client_events]


def upstream_events(event_type: str) -> list[dict]:
    events = [json.loads(text) for text in RecordingConsumer.upstream_events]
    return [event for event in events if event.get("type") == event_type]


@sync_to_async
def stored() -> tuple[list[Session], list[TranscriptItem], list[UsageEvent]]:
    with scopes_disabled():
        return (
            list(Session.objects.order_by("pk")),
            list(TranscriptItem.objects.order_by("sequence")),
            list(UsageEvent.objects.order_by("pk")),
        )


async def ended_session() -> Session:
    deadline = time.monotonic() + TIMEOUT
    while True:
        sessions, _, _ = await stored()
        if sessions and sessions[-1].ended_at is not None:
            return sessions[-1]
        assert time.monotonic() < deadline, "the end of the call was not recorded"
        await asyncio.sleep(0.05)


@transactional
async def test_a_call_completes_a_turn(application, phone, utterance_ulaw, ulaw_silence):
    token = await webhook_token()
    communicator, twilio = await open_stream(application, token)
    try:
        await send_audio(communicator, twilio, ulaw_silence[:4000] + utterance_ulaw + ulaw_silence)
        answer = await receive_through(communicator, "response.done")
        assert_twilio_shaped(answer)
        kinds = [message["event"] for message in answer]
        assert "clear" not in kinds
        # Every audio delta is followed by its mark.
        assert kinds == ["media", "mark"] * (len(kinds) // 2)
        audio = media_bytes(answer)
        assert len(audio) > 8000  # more than a second of μ-law speech
        assert len(set(audio)) > 50  # not silence
        # Twilio plays it all and echoes every mark; then the caller hangs up.
        for message in answer:
            if message["event"] == "mark":
                await communicator.send_to(text_data=twilio.mark(message["mark"]["name"]))
        await communicator.send_to(text_data=twilio.stop())
        closed = await communicator.receive_output(timeout=TIMEOUT)
        assert closed == {"type": "websocket.close", "code": 1000, "reason": "call ended"}
    finally:
        await communicator.disconnect()

    session = await ended_session()
    sessions, items, usage = await stored()
    assert len(sessions) == 1
    assert session.channel == "phone"
    assert session.tenant_id == phone.world.tenant_a.pk
    assert session.agent_id == phone.agent.pk
    assert session.end_reason == "client_closed"
    tenant_id = phone.world.tenant_a.pk
    assert session.end_user_hash == end_user_hash(
        tenant_id=tenant_id,
        end_user=phone_caller_end_user(tenant_id=tenant_id, caller=CALLER),
    )
    # μ-law both ways, relayed as is: 8 bytes a millisecond.
    deltas = upstream_events("response.output_audio.delta")
    # μ-law both ways, relayed as is: 8 bytes a millisecond. (The bridge meters deltas whose
    # "type" is not first, as the local engine sends them, from the base64 length without its
    # padding: up to 2 bytes too many per delta.)
    assert len(audio) // 8 <= session.audio_out_ms <= (len(audio) + 2 * len(deltas)) // 8
    sent_ms = (4000 + len(utterance_ulaw) + len(ulaw_silence)) // 8
    assert sent_ms - 20 <= session.audio_in_ms <= sent_ms
    user, assistant = items
    assert (user.role, assistant.role) == ("user", "assistant")
    assert "order" in user.text  # 8 kHz recognition is weak, but it hears that
    assert user.text in assistant.text
    assert [event.session_id for event in usage] == [session.pk]
    # The upstream was configured for μ-law both ways, whatever the agent says.
    (created,) = upstream_events("session.created")
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert created["session"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    # The upstream's audio went to Twilio byte for byte.
    assert b"".join(base64.b64decode(event["delta"]) for event in deltas) == audio


@transactional
async def test_barge_in_clears_twilio_and_truncates_at_what_was_heard(
    application, phone, utterance_ulaw, ulaw_silence
):
    token = await webhook_token()
    communicator, twilio = await open_stream(application, token)
    try:
        await send_audio(communicator, twilio, ulaw_silence[:4000] + utterance_ulaw + ulaw_silence)
        answer = await receive_through(communicator, "response.done")
        marks = [message["mark"]["name"] for message in answer if message["event"] == "mark"]
        media = [message for message in answer if message["event"] == "media"]
        assert len(marks) == len(media) > 5
        # Twilio has played the first three deltas when the caller starts talking again.
        for name in marks[:3]:
            await communicator.send_to(text_data=twilio.mark(name))
        heard_ms = len(media_bytes(answer[:6])) // 8
        await send_audio(communicator, twilio, utterance_ulaw[:8000])
        interruption = await receive_through(communicator, "input_audio_buffer.speech_started", 2)
        assert interruption[0] == {"event": "clear", "streamSid": STREAM_SID}
        # Twilio echoes the marks of the audio it dropped: they do not count as heard.
        for name in marks[3:]:
            await communicator.send_to(text_data=twilio.mark(name))
        # The caller finishes the sentence; the conversation goes on.
        await send_audio(communicator, twilio, utterance_ulaw[8000:] + ulaw_silence)
        second = await receive_through(communicator, "response.done", 2)
        assert_twilio_shaped(interruption + second)
        assert len(media_bytes(second)) > 8000
        await communicator.send_to(text_data=twilio.stop())
    finally:
        await communicator.disconnect()

    first_item = upstream_events("response.output_audio.delta")[0]["item_id"]
    # The answer was complete upstream (no cancel), not yet heard in full on the phone.
    assert client_events() == [
        {"type": "conversation.item.truncate", "item_id": first_item, "content_index": 0,
         "audio_end_ms": 300}
    ]  # fmt: skip
    # The truncate reached the engine, at exactly what the caller heard.
    (truncated,) = upstream_events("conversation.item.truncated")
    assert truncated["item_id"] == first_item
    assert truncated["content_index"] == 0
    assert truncated["audio_end_ms"] == heard_ms == 300
    assert upstream_events("error") == []
    session = await ended_session()
    _, items, usage = await stored()
    assert [item.role for item in items] == ["user", "assistant", "user", "assistant"]
    assert len(usage) == 2
    assert session.channel == "phone"


@transactional
async def test_the_stream_token_is_single_use(application, phone):
    token = await webhook_token()
    first, _ = await open_stream(application, token)
    await first.send_to(text_data=TwilioStream().stop())
    await first.receive_output(timeout=TIMEOUT)
    await first.disconnect()
    await ended_session()

    second, _ = await open_stream(application, token)
    try:
        closed = await second.receive_output(timeout=TIMEOUT)
        assert closed == {"type": "websocket.close", "code": 4401, "reason": "token_used"}
    finally:
        await second.disconnect()
    sessions, _, _ = await stored()
    assert len(sessions) == 1


@transactional
@pytest.mark.parametrize(
    ("which", "code"),
    [("missing", "token_missing"), ("forged", "token_invalid"), ("api-ephemeral", "token_invalid")],
)
async def test_a_stream_without_a_phone_token_is_refused(application, phone, which, code):
    from agents import tokens
    from tenants.services import api_key_issue

    if which == "missing":
        token = ""
    elif which == "forged":
        token = "vp_ek_" + "x" * 32
    else:  # an ephemeral key a tenant backend minted for a browser is not a phone token
        api_key, _ = await sync_to_async(api_key_issue)(tenant=phone.world.tenant_a, name="b")
        minted = await sync_to_async(tokens.ephemeral_key_mint)(
            api_key=api_key, agent_id=phone.agent.pk
        )
        token = minted.value
    communicator, twilio = await open_stream(application, token)
    try:
        closed = await communicator.receive_output(timeout=TIMEOUT)
        assert closed == {"type": "websocket.close", "code": 4401, "reason": code}
    finally:
        await communicator.disconnect()
    sessions, _, _ = await stored()
    assert sessions == []


@transactional
async def test_media_before_start_is_ignored_and_the_url_carries_nothing(
    application, phone, utterance_ulaw
):
    token = await webhook_token()
    twilio = TwilioStream()
    communicator = WebsocketCommunicator(application, f"/twilio/stream/?token={token}")
    try:
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        await send_audio(communicator, twilio, utterance_ulaw[:1600])
        # The stop is answered only after everything sent before it was handled: nothing came.
        await communicator.send_to(text_data=twilio.stop())
        closed = await communicator.receive_output(timeout=TIMEOUT)
        assert closed == {"type": "websocket.close", "code": 1000, "reason": "call ended"}
    finally:
        await communicator.disconnect()
    sessions, _, _ = await stored()
    assert sessions == []
    with scopes_disabled():
        assert await sync_to_async(ClientToken.objects.filter(used_at__isnull=True).count)() == 1


@pytest.fixture
def paced_engine(monkeypatch):
    """The local engine speaking in real time, as a real upstream does (the answer is still
    streaming when the caller interrupts)."""
    import agents.consumers
    from agents.realtime.engine import connect_local

    def connector(*, agent, api_key, safety_identifier):
        async def connect():
            return await connect_local(agent.model, realtime_pacing=True)

        return "local", connect

    monkeypatch.setattr(agents.consumers, "upstream_connector", connector)


@transactional
async def test_barge_in_during_a_streaming_answer_cancels_it(
    application, phone, paced_engine, utterance_ulaw, ulaw_silence
):
    token = await webhook_token()
    communicator, twilio = await open_stream(application, token)
    try:
        await send_audio(communicator, twilio, ulaw_silence[:4000] + utterance_ulaw + ulaw_silence)
        started = []
        while len(started) < 8:  # four deltas (400 ms) and their marks, streamed in real time
            started.append(json.loads(await communicator.receive_from(timeout=TIMEOUT)))
        marks = [message["mark"]["name"] for message in started if message["event"] == "mark"]
        for name in marks[:3]:
            await communicator.send_to(text_data=twilio.mark(name))
        await send_audio(communicator, twilio, utterance_ulaw[:8000])
        rest = await receive_through(communicator, "response.done")  # the cancelled answer's
        clear_at = rest.index({"event": "clear", "streamSid": STREAM_SID})
        await communicator.send_to(text_data=twilio.stop())
    finally:
        await communicator.disconnect()

    first_item = upstream_events("response.output_audio.delta")[0]["item_id"]
    # Nothing of the cut-off answer reaches the caller after the clear.
    assert [message for message in rest[clear_at + 1 :] if message["event"] == "media"] == []
    truncate, cancel = client_events()
    assert truncate == {
        "type": "conversation.item.truncate", "item_id": first_item, "content_index": 0,
        "audio_end_ms": 300,
    }  # fmt: skip
    assert cancel == {"type": "response.cancel"}
    # (The local engine refuses to truncate an item still in progress, unlike OpenAI; the
    # cancel stops it all the same.)
    (done, *_) = upstream_events("response.done")
    assert done["response"]["status"] == "cancelled"
    session = await ended_session()
    assert session.channel == "phone"
