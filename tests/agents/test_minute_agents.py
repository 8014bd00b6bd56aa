"""Transcription and translation agents through both sockets, billed per audio minute."""

import base64
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from agents.configuration import agent_create
from agents.models import TranscriptItem
from billing.models import UsageEvent
from billing.selectors import event_cost
from tenants import services
from tenants.scoping import tenant_scope
from tests.spoken import spoken
from voiceplatform.asgi import application

ORIGIN = "https://shop.example"
PHRASE = "what is the status of my order"


@pytest.fixture(scope="module")
def utterance_chunks():
    pcm = spoken(PHRASE, rate_hz=24000, voice="en-us")
    pcm = b"\x00\x00" * 12000 + pcm + b"\x00\x00" * 24000  # 0.5 s before, 1 s after
    size = 960  # 20 ms
    return [base64.b64encode(pcm[i : i + size]).decode() for i in range(0, len(pcm), size)]


def setup(kind):
    owner = services.user_get_or_create(email="o@example.com", password="pw-123456789")
    tenant = services.tenant_create(slug="acme", name="Acme", owner=owner)
    fields = {"name": kind, "provider": "local", "kind": kind}
    if kind == "transcription":
        fields["model"] = "gpt-realtime-whisper"
    else:
        fields.update(model="gpt-realtime-translate", target_language="fr")
    agent = agent_create(tenant=tenant, actor=owner, fields=fields)
    _, raw_key = services.api_key_issue(tenant=tenant, name="b", default_agent=agent)
    widget_key = services.widget_key_create(
        tenant=tenant, name="w", allowed_origins=[ORIGIN], agent=agent
    )
    return tenant, raw_key, widget_key.key


async def api_socket(raw_key, path):
    communicator = WebsocketCommunicator(
        application, path, headers=[(b"authorization", f"Bearer {raw_key}".encode())]
    )
    assert (await communicator.connect())[0]
    return communicator


async def widget_socket(widget_key):
    response = await AsyncClient().post(
        "/widget/session", {"key": widget_key}, content_type="application/json",
        headers={"Origin": ORIGIN},
    )  # fmt: skip
    token = response.json()["token"]
    communicator = WebsocketCommunicator(
        application, "/ws/widget/", headers=[(b"origin", ORIGIN.encode())],
        subprotocols=["realtime", f"vp-token.{token}"],
    )  # fmt: skip
    assert (await communicator.connect())[0]
    return communicator


async def stream(communicator, chunks, append_type, until, timeout=30):
    events = []
    for chunk in chunks:
        await communicator.send_to(text_data=json.dumps({"type": append_type, "audio": chunk}))
    while not until(events):
        events.append(json.loads(await communicator.receive_from(timeout=timeout)))
    await communicator.disconnect()
    return events


def stored(tenant):
    with tenant_scope(tenant):
        items = list(TranscriptItem.objects.values("role", "kind", "text", "data"))
        usage = list(UsageEvent.objects.all())
    return items, usage


def transcribed(events):
    return any(e["type"] == "conversation.item.input_audio_transcription.completed" for e in events)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("socket", ["api", "widget"])
async def test_transcription_agent_captions_stores_and_bills_per_minute(socket, utterance_chunks):
    tenant, raw_key, widget_key = await database_sync_to_async(setup)("transcription")
    if socket == "api":
        communicator = await api_socket(raw_key, "/v1/realtime?intent=transcription")
    else:
        communicator = await widget_socket(widget_key)
    events = await stream(communicator, utterance_chunks, "input_audio_buffer.append", transcribed)
    done = next(
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    )
    heard = done["transcript"]
    assert "order" in heard and len(heard.split()) >= 5  # pocketsphinx may mishear a word
    assert not any(e["type"].startswith("response.") for e in events)  # captions, no answers
    items, usage = await database_sync_to_async(stored)(tenant)
    assert [(i["role"], i["text"]) for i in items] == [("user", heard)]
    streamed_ms = sum(len(base64.b64decode(c)) for c in utterance_chunks) // 48
    assert sum(event.audio_ms for event in usage) == streamed_ms
    assert all(
        event.model == "gpt-realtime-whisper" and event.input_audio_tokens == 0 for event in usage
    )
    assert {event.status for event in usage} <= {"committed", "final"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("socket", ["api", "widget"])
async def test_translation_agent_translates_stores_side_by_side_and_bills_per_minute(
    socket, utterance_chunks
):
    tenant, raw_key, widget_key = await database_sync_to_async(setup)("translation")
    if socket == "api":
        communicator = await api_socket(
            raw_key, "/v1/realtime/translations?model=gpt-realtime-translate"
        )
    else:
        communicator = await widget_socket(widget_key)

    def translated(events):
        text = "".join(
            e.get("delta", "") for e in events if e["type"] == "session.output_transcript.delta"
        )
        return "order" in text and any(e["type"] == "session.output_audio.delta" for e in events)

    events = await stream(
        communicator, utterance_chunks, "session.input_audio_buffer.append", translated
    )
    source = "".join(e["delta"] for e in events if e["type"] == "session.input_transcript.delta")
    target = "".join(e["delta"] for e in events if e["type"] == "session.output_transcript.delta")
    heard = source.strip()
    assert "order" in heard and len(heard.split()) >= 5  # pocketsphinx may mishear a word
    assert target.strip() == f"[fr] {heard}"
    items, usage = await database_sync_to_async(stored)(tenant)
    assert items == [{"role": "assistant", "kind": "translation", "text": f"[fr] {heard}",
                      "data": {"source": heard, "language": "fr"}}]  # fmt: skip
    streamed_ms = sum(len(base64.b64decode(c)) for c in utterance_chunks) // 48
    assert sum(event.audio_ms for event in usage) == streamed_ms
    assert [event.model for event in usage] == ["gpt-realtime-translate"]
    # On the local engine nothing is billed; the same minutes on OpenAI cost $0.034 a minute.
    assert usage[0].provider == "local"
    assert await database_sync_to_async(event_cost)(usage[0]) == 0


@pytest.mark.django_db(transaction=True)
async def test_translation_agent_refuses_realtime_events(utterance_chunks):
    tenant, raw_key, _ = await database_sync_to_async(setup)("translation")
    communicator = await api_socket(
        raw_key, "/v1/realtime/translations?model=gpt-realtime-translate"
    )
    await communicator.send_json_to({"type": "response.create"})
    events = []
    while not any(e["type"] == "error" for e in events):
        events.append(json.loads(await communicator.receive_from(timeout=5)))
    assert events[-1]["error"]["code"] == "event_not_allowed"
    await communicator.disconnect()
