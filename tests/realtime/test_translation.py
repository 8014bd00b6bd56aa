"""Translation sessions (gpt-realtime-translate) on the local engine; every server event is
validated against the SDK's RealtimeTranslationServerEvent union."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from typing import Any

import pytest
from openai.types.realtime import RealtimeTranslationServerEvent, RealtimeTranslationSession
from pydantic import TypeAdapter
from websockets.exceptions import ConnectionClosed

from agents.realtime import audio
from agents.realtime.engine import connect_local
from agents.realtime.server import serve

pytestmark = pytest.mark.asyncio

TRANSLATION_EVENT = TypeAdapter(RealtimeTranslationServerEvent)
MODEL = "gpt-realtime-translate"
CHUNK_200MS = 24000 * 2 // 5


def validate(raw: str) -> dict[str, Any]:
    event = json.loads(raw)
    model = TRANSLATION_EVENT.validate_python(event)
    assert model.type == event["type"]
    if "session" in event:
        RealtimeTranslationSession.model_validate(event["session"])
    return event


class TranslationClient:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []

    async def send(self, **event: Any) -> None:
        await self.conn.send(json.dumps(event))

    async def recv(self, timeout: float = 15) -> dict[str, Any]:
        event = validate(await asyncio.wait_for(self.conn.recv(), timeout))
        self.events.append(event)
        return event

    async def until(self, event_type: str, timeout: float = 15) -> list[dict[str, Any]]:
        out = []
        while True:
            out.append(await self.recv(timeout))
            if out[-1]["type"] == event_type:
                return out

    async def append(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), CHUNK_200MS):
            chunk = base64.b64encode(pcm[i : i + CHUNK_200MS]).decode()
            await self.send(type="session.input_audio_buffer.append", audio=chunk)


def joined(events: list[dict[str, Any]], event_type: str) -> str:
    return "".join(e["delta"] for e in events if e["type"] == event_type)


async def open_translation(**kwargs: Any) -> tuple[TranslationClient, dict[str, Any]]:
    client = TranslationClient(await connect_local(MODEL, intent="translation", **kwargs))
    created = await client.recv()
    assert created["type"] == "session.created"
    return client, created["session"]


async def test_translation_session_end_to_end(turn_pcm, utterance_text):
    client, session = await open_translation()
    assert session["type"] == "translation" and session["model"] == MODEL
    assert session["audio"]["input"]["transcription"] is None
    await client.send(
        type="session.update",
        session={
            "audio": {
                "input": {"transcription": {"model": "gpt-realtime-whisper"}},
                "output": {"language": "fr"},
            }
        },
    )
    updated = (await client.recv())["session"]
    assert updated["audio"]["output"]["language"] == "fr"
    assert updated["audio"]["input"]["transcription"] == {"model": "gpt-realtime-whisper"}

    await client.append(turn_pcm)
    await client.send(type="session.close")
    events = await client.until("session.closed", timeout=30)
    with pytest.raises(ConnectionClosed) as info:
        await client.conn.recv()
    assert info.value.rcvd.code == 1000

    types = [e["type"] for e in events]
    assert set(types) == {
        "session.input_transcript.delta",
        "session.output_transcript.delta",
        "session.output_audio.delta",
        "session.closed",
    }
    # source transcript first, then the translation (transcript and audio interleaved)
    last_input = max(i for i, t in enumerate(types) if t == "session.input_transcript.delta")
    assert last_input < types.index("session.output_transcript.delta")
    # pocketsphinx may mishear a word of eSpeak's voice; the translation is what it heard.
    heard = joined(events, "session.input_transcript.delta")
    assert "order" in heard and len(heard.split()) >= 5
    assert joined(events, "session.output_transcript.delta") == f"[fr] {heard}"
    deltas = [e for e in events if e["type"] == "session.output_audio.delta"]
    assert all(
        (d["format"], d["sample_rate"], d["channels"]) == ("pcm16", 24000, 1) for d in deltas
    )
    pcm = b"".join(base64.b64decode(d["delta"]) for d in deltas)
    assert 1000 < audio.duration_ms(pcm) < 6000
    elapsed = {e["elapsed_ms"] for e in events if "elapsed_ms" in e}
    assert len(elapsed) == 1 and next(iter(elapsed)) % 200 == 0


async def test_translation_without_transcription_and_close_flushes(utterance_pcm, utterance_text):
    client, _ = await open_translation()
    # No trailing silence: the utterance is still "in speech" when the client closes.
    await client.append(audio.silence(500) + utterance_pcm)
    await client.send(type="session.close")
    events = await client.until("session.closed", timeout=30)
    types = [e["type"] for e in events]
    assert "session.input_transcript.delta" not in types  # transcription not configured
    translated = joined(events, "session.output_transcript.delta")
    assert translated.startswith("[en] ") and "order" in translated
    assert "session.output_audio.delta" in types
    assert client.conn.close_code == 1000


async def test_two_utterances_append_only_deltas(utterance_pcm, utterance_text):
    client, _ = await open_translation()
    await client.send(type="session.update", session={"audio": {"output": {"language": "de"}}})
    await client.recv()
    turn = audio.silence(500) + utterance_pcm + audio.silence(1000)
    await client.append(turn + turn)
    await client.send(type="session.close")
    events = await client.until("session.closed", timeout=30)
    text = joined(events, "session.output_transcript.delta")
    assert re.fullmatch(r"\[de\] [a-z ]*order \[de\] [a-z ]*order", text), text
    elapsed = sorted({e["elapsed_ms"] for e in events if "elapsed_ms" in e})
    assert len(elapsed) == 2


async def test_translation_errors_keep_the_session(turn_pcm):
    client, _ = await open_translation()
    await client.send(type="response.create", event_id="evt_1")
    error = await client.recv()
    assert error["error"]["code"] == "invalid_value" and error["error"]["param"] == "type"
    assert error["error"]["event_id"] == "evt_1"
    assert "session.input_audio_buffer.append" in error["error"]["message"]
    await client.send(type="input_audio_buffer.append", audio="AAAA")  # realtime-only event
    assert (await client.recv())["error"]["param"] == "type"
    await client.send(type="session.input_audio_buffer.append", audio="!!not base64!!")
    assert (await client.recv())["error"]["param"] == "audio"
    await client.send(type="session.input_audio_buffer.append")
    assert (await client.recv())["error"]["code"] == "missing_required_parameter"
    await client.conn.send("{nope")
    assert (await client.recv())["error"]["code"] == "invalid_json"
    await client.send(type="session.update", session={"type": "realtime"})
    assert (await client.recv())["error"]["param"] == "session.type"
    await client.send(type="session.update", session={"model": "gpt-realtime-2"})
    assert (await client.recv())["error"]["param"] == "session.model"
    await client.send(type="session.update", session={"instructions": "Translate."})
    error = await client.recv()
    assert (error["error"]["code"], error["error"]["param"]) == (
        "unknown_parameter",
        "session.instructions",
    )
    await client.send(type="session.update", session={"audio": {"output": {"voice": "marin"}}})
    assert (await client.recv())["error"]["param"] == "session.audio.output.voice"
    await client.send(type="session.update", session={"audio": {"output": {"language": 5}}})
    assert (await client.recv())["error"]["code"] == "invalid_value"
    # Still working.
    await client.send(type="session.update", session={"audio": {"output": {"language": "es"}}})
    assert (await client.recv())["session"]["audio"]["output"]["language"] == "es"
    await client.append(turn_pcm)
    events = await client.until("session.output_audio.delta", timeout=30)
    assert joined(events, "session.output_transcript.delta") == "[es]"
    await client.conn.close()


async def test_translation_model_alone_opens_a_translation_session():
    conn = await connect_local(MODEL)
    assert validate(await conn.recv())["session"]["type"] == "translation"
    await conn.close()
    conn = await connect_local("gpt-realtime-2", intent="translation")
    session = validate(await conn.recv())["session"]
    assert (session["type"], session["model"]) == ("translation", "gpt-realtime-2")
    await conn.close()


async def test_sdk_translation_client_against_standalone_server(turn_pcm, utterance_text):
    from openai import AsyncOpenAI

    server = await serve("127.0.0.1", 0, max_session_seconds=60)
    port = server.sockets[0].getsockname()[1]
    try:
        client = AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
        async with client.realtime.translations.connect(model=MODEL) as conn:
            created = await conn.recv()
            assert created.type == "session.created"
            assert created.session.type == "translation"
            await conn.send(
                {"type": "session.update", "session": {"audio": {"output": {"language": "fr"}}}}
            )
            updated = await conn.recv()
            assert updated.type == "session.updated"
            assert updated.session.audio.output.language == "fr"
            for i in range(0, len(turn_pcm), CHUNK_200MS):
                chunk = base64.b64encode(turn_pcm[i : i + CHUNK_200MS]).decode()
                await conn.send({"type": "session.input_audio_buffer.append", "audio": chunk})
            await conn.send({"type": "session.close"})
            text = ""
            while True:
                event = await asyncio.wait_for(conn.recv(), 30)
                if event.type == "session.output_transcript.delta":
                    text += event.delta
                if event.type == "session.closed":
                    break
            assert text.startswith("[fr] ") and "order" in text
    finally:
        server.close()
        await server.wait_closed()


async def test_standalone_server_model_query_opens_translation():
    import websockets

    server = await serve("127.0.0.1", 0, max_session_seconds=60)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}"
        async with websockets.connect(url) as ws:
            created = validate(await ws.recv())
            assert created["session"]["type"] == "translation"
            await ws.send(json.dumps({"type": "session.close"}))
            assert validate(await ws.recv())["type"] == "session.closed"
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1000
    finally:
        server.close()
        await server.wait_closed()
