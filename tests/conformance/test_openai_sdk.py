"""The official ``openai`` SDK against the platform under a real server process
(production's: voiceplatform.serve).

Each test asserts what OpenAI's Realtime API does for the same client code; the platform is a
drop-in when they all pass. Every server event is validated against the SDK's event unions
(``protocol.Recorder``). Nothing waits a fixed time: each step waits for its event, bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import websockets
from openai import AsyncOpenAI
from openai.types.realtime import ClientSecretCreateResponse, RealtimeSessionCreateResponse

from tests.conformance.protocol import (
    ITEM_EVENTS,
    TRANSLATION_EVENT,
    Recorder,
    chunks_b64,
    joined,
    types,
    user_text,
)

pytestmark = [pytest.mark.timeout(90)]

MODEL = "gpt-realtime-2"
DEMO_INSTRUCTIONS = "You are the friendly voice assistant of the Demo Shop. Answer briefly."
CHUNK_20MS = 960  # PCM16 24 kHz mono
ORDER = {"status": "shipped", "eta": "Friday"}


@contextlib.asynccontextmanager
async def realtime(conf, role: str = "voice", *, api_key: str | None = None, **query):
    """An SDK connection to ``/v1/realtime`` and a recorder of what it receives."""
    client = AsyncOpenAI(api_key=api_key or conf.keys[role], websocket_base_url=conf.ws_base)
    model = query.pop("model", MODEL)
    async with client.realtime.connect(model=model, extra_query=query) as connection:
        yield connection, Recorder(connection.recv_bytes)


async def barrier(connection, events: Recorder) -> list[dict]:
    """Everything the server sends before it answers an ``input_audio_buffer.clear`` sent now.

    The upstream handles client events in order, so whatever the session was going to start
    because of earlier events (a response, a session update) shows up before the answer.
    """
    await connection.input_audio_buffer.clear()
    return await events.until("input_audio_buffer.cleared")


async def text_turn(connection, events: Recorder, text: str, item_id: str | None = None):
    await connection.conversation.item.create(item=user_text(text, item_id))
    await connection.response.create()
    return await events.until("response.done")


def transcripts(events: list[dict]) -> list[str]:
    return [e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done"]


# --- text, audio ------------------------------------------------------------------------------


async def test_text_turn(served):
    async with realtime(served) as (connection, events):
        created = await events.next()
        assert created["type"] == "session.created"
        turn = await text_turn(connection, events, "hello conformance", item_id="item_conf_user_1")
    done = turn[-1]
    assert done["response"]["status"] == "completed"
    assert transcripts(turn) == ["You said: hello conformance."]
    assert any(e["type"] == "response.output_audio.delta" for e in turn)
    # The client's own item id is the item's id.
    added = [e["item"]["id"] for e in turn if e["type"] in ITEM_EVENTS]
    assert "item_conf_user_1" in added
    assert "response.created" in types(turn)
    assert types(turn).index("response.created") < types(turn).index("response.output_item.added")
    assert events.errors() == []


async def test_session_created_carries_the_agent_configuration_and_nothing_unsolicited(served):
    """The platform configures the upstream from the agent; the client sees that configuration
    in ``session.created`` and no ``session.updated`` it did not ask for (a client takes any
    ``session.updated`` for the answer to its own ``session.update``)."""
    async with realtime(served) as (connection, events):
        created = await events.next()
        assert created["type"] == "session.created"
        session = created["session"]
        assert session["instructions"] == DEMO_INSTRUCTIONS
        assert session["audio"]["output"]["voice"] == "marin"
        assert session["model"] == MODEL
        after = await barrier(connection, events)
    assert types(after) == ["input_audio_buffer.cleared"]


async def test_audio_turn(served, utterance_pcm):
    async with realtime(served) as (connection, events):
        assert (await events.next())["type"] == "session.created"
        for chunk in chunks_b64(utterance_pcm, CHUNK_20MS):
            await connection.input_audio_buffer.append(audio=chunk)
        turn = await events.until("response.done", timeout=40)
    kinds = types(turn)
    for expected in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
    ):
        assert expected in kinds, (expected, kinds)
    assert kinds.index("input_audio_buffer.speech_started") < kinds.index(
        "input_audio_buffer.speech_stopped"
    )
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    heard = next(
        e["transcript"]
        for e in turn
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    )
    assert "order" in heard
    assert turn[-1]["response"]["status"] == "completed"
    (answer,) = transcripts(turn)
    assert answer.startswith("You said: ") and "order" in answer
    assert events.errors() == []


# --- a client-executed function tool -------------------------------------------------------------


async def test_client_tool_round_trip(served):
    """The agent's ``lookup_order`` runs on the client. The client does what OpenAI requires:
    for each ``function_call`` it runs the tool, adds a ``function_call_output`` item (with an
    id it chose) and sends ``response.create``. The tool runs exactly once, no ``error`` event
    arrives, the output item comes back under the client's id, and the answer uses the output."""
    runs: list[dict] = []
    output_ids: list[str] = []
    async with realtime(served, "tools") as (connection, events):
        created = await events.next()
        assert created["type"] == "session.created"
        await connection.conversation.item.create(
            item=user_text("please lookup order one two three")
        )
        await connection.response.create()
        answers: list[str] = []
        while not answers:
            turn = await events.until("response.done")
            calls = [
                e["item"]
                for e in turn
                if e["type"] == "response.output_item.done" and e["item"]["type"] == "function_call"
            ]
            answers = transcripts(turn)
            for call in calls:  # the client's tool runner
                assert call["name"] == "lookup_order"
                runs.append(json.loads(call["arguments"]))
                output_ids.append(f"item_conf_out_{len(runs)}")
                await connection.conversation.item.create(
                    item={
                        "id": output_ids[-1],
                        "type": "function_call_output",
                        "call_id": call["call_id"],
                        "output": json.dumps(ORDER),
                    }
                )
            if calls:
                await connection.response.create()
            assert len(runs) <= 3, f"the tool keeps being called: {runs}"
        after = await barrier(connection, events)
    assert runs == [{"order_number": "123"}]
    assert answers == ["The lookup order tool returned: status shipped, eta Friday."]
    assert events.errors() == []
    echoed = {e["item"]["id"] for e in events.events if e["type"] in ITEM_EVENTS}
    assert output_ids[0] in echoed, sorted(echoed)
    outputs = [
        e["item"]
        for e in events.events
        if e["type"] in ITEM_EVENTS and e["item"]["type"] == "function_call_output"
    ]
    assert {item["id"] for item in outputs} == {output_ids[0]}
    # Two responses (the call, the answer) and nothing started behind the client's back.
    assert len(events.of_type("response.created")) == 2
    assert "response.created" not in types(after)


# --- transcription and translation sessions --------------------------------------------------


def answers_update(session_type: str):
    """The ``session.updated`` answering the client's update: the one that shows what it asked
    (near-field noise reduction; ``de`` output). Another ``session.updated`` first is a test
    failure (counted at the end); an ``error`` first fails at once, with the event."""

    def matches(event: dict) -> bool:
        if event["type"] != "session.updated":
            return False
        audio = event["session"].get("audio") or {}
        if session_type == "translation":
            return (audio.get("output") or {}).get("language") == "de"
        return (audio.get("input") or {}).get("noise_reduction") == {"type": "near_field"}

    return matches


TRANSCRIPTION_UPDATE = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 24000},
            "noise_reduction": {"type": "near_field"},
            "transcription": {"model": "gpt-realtime-whisper", "language": "en"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
            },
        }
    },
}


async def test_transcription_session_configured_by_session_update(served, utterance_pcm):
    """``?intent=transcription``, then the standard ``session.update`` (type "transcription",
    language, turn detection): OpenAI answers ``session.updated`` with that configuration,
    then transcribes each turn server VAD finds. No responses in a transcription session."""
    async with realtime(
        served, "transcription", model="gpt-realtime-whisper", intent="transcription"
    ) as (connection, events):
        created = await events.next()
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "transcription"
        await connection.session.update(session=TRANSCRIPTION_UPDATE)
        updated = (await events.until(answers_update("transcription")))[-1]["session"]
        assert updated["type"] == "transcription"
        audio_input = updated["audio"]["input"]
        assert audio_input["transcription"]["model"] == "gpt-realtime-whisper"
        assert audio_input["transcription"]["language"] == "en"
        assert audio_input["noise_reduction"] == {"type": "near_field"}
        assert audio_input["turn_detection"]["type"] == "server_vad"
        assert audio_input["turn_detection"]["silence_duration_ms"] == 500
        for chunk in chunks_b64(utterance_pcm, CHUNK_20MS):
            await connection.input_audio_buffer.append(audio=chunk)
        turn = await events.until(
            "conversation.item.input_audio_transcription.completed", timeout=40
        )
        after = await barrier(connection, events)
    kinds = types(turn)
    assert "input_audio_buffer.committed" in kinds
    assert "order" in turn[-1]["transcript"]
    assert not events.of_type("response.created")
    assert "response.created" not in types(after)
    assert len(events.of_type("session.updated")) == 1, "one answer to one session.update"
    assert events.errors() == []


async def test_translation_session_chooses_its_output_language(served, utterance_pcm):
    """On ``/v1/realtime/translations`` the client picks the output language and source
    transcription with ``session.update``; the translation that follows is in that language,
    not the agent's default (French). Every event validates against the translation union."""
    client = AsyncOpenAI(api_key=served.keys["translation"], websocket_base_url=served.ws_base)
    async with client.realtime.translations.connect(model="gpt-realtime-translate") as connection:
        events = Recorder(connection.recv_bytes, TRANSLATION_EVENT)
        created = await events.next()
        assert created["type"] == "session.created"
        assert created["session"]["type"] == "translation"
        await connection.session.update(
            session={
                "audio": {
                    "input": {"transcription": {"model": "gpt-realtime-whisper"}},
                    "output": {"language": "de"},
                }
            }
        )
        updated = (await events.until(answers_update("translation")))[-1]["session"]
        assert updated["audio"]["output"]["language"] == "de"
        assert updated["audio"]["input"]["transcription"] == {"model": "gpt-realtime-whisper"}
        for chunk in chunks_b64(utterance_pcm, 24000 * 2 // 5):  # 200 ms, as OpenAI advises
            await connection.session.input_audio_buffer.append(audio=chunk)
        await connection.session.close()
        translated = await events.until("session.closed", timeout=40)
    heard = joined(translated, "session.input_transcript.delta")
    assert "order" in heard
    assert joined(translated, "session.output_transcript.delta") == f"[de] {heard}"
    assert any(e["type"] == "session.output_audio.delta" for e in translated)
    assert len(events.of_type("session.updated")) == 1, "one answer to one session.update"
    assert events.errors() == []


# --- client secrets ------------------------------------------------------------------------------


async def mint(conf, seconds: int) -> tuple[dict, ClientSecretCreateResponse]:
    client = AsyncOpenAI(api_key=conf.keys["voice"], base_url=conf.http_base)
    raw = await client.realtime.client_secrets.with_raw_response.create(
        expires_after={"anchor": "created_at", "seconds": seconds},
        session={"type": "realtime", "model": MODEL},
    )
    assert raw.http_response.status_code == 200
    body = raw.http_response.json()
    return body, ClientSecretCreateResponse.model_validate(body)


async def test_client_secret_has_openais_shape_and_works_on_the_api_socket_more_than_once(
    served,
):
    before = int(time.time())
    body, secret = await mint(served, 600)
    assert isinstance(secret.session, RealtimeSessionCreateResponse)
    assert secret.session.type == "realtime"
    assert secret.session.object == "realtime.session"
    assert secret.session.model == MODEL
    assert secret.session.model_extra == {}, "fields OpenAI does not send"
    assert set(body) == {"value", "expires_at", "session"}
    assert before + 599 <= secret.expires_at <= int(time.time()) + 601
    for n in range(2):  # a client secret is not single-use on /v1/realtime
        async with realtime(served, api_key=secret.value) as (connection, events):
            assert (await events.next())["type"] == "session.created"
            turn = await text_turn(connection, events, f"secret use {n + 1}")
        assert transcripts(turn) == [f"You said: secret use {n + 1}."]
        assert events.errors() == []


async def test_client_secret_works_until_it_expires(served):
    _, secret = await mint(served, 10)  # OpenAI's shortest expiry
    async with realtime(served, api_key=secret.value) as (connection, events):
        assert (await events.next())["type"] == "session.created"
        turn = await text_turn(connection, events, "before expiry")
    assert transcripts(turn) == ["You said: before expiry."]
    await asyncio.sleep(max(0.0, secret.expires_at + 1 - time.time()))  # the clock, not events
    assert await refusal(served, secret.value) in (
        ("http", 401),  # refused at the handshake, as OpenAI does
        ("error", 4401),  # or accepted only to say why (the platform's documented refusal)
    )


async def refusal(conf, api_key: str) -> tuple[str, int | None]:
    """How a key is refused: ("http", status) at the handshake, else the first event's type
    and the close code that follows it."""
    url = f"{conf.ws_base}/realtime?model={MODEL}"
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        async with websockets.connect(url, additional_headers=headers) as ws:
            events = Recorder(ws.recv)
            first = await events.next()
            with contextlib.suppress(websockets.ConnectionClosed):
                await events.next(timeout=5)
            return first["type"], ws.close_code
    except websockets.InvalidStatus as error:
        return "http", error.response.status_code


# --- the same client under uvicorn ------------------------------------------------------------


async def test_text_turn_under_uvicorn(uvicorn):
    async with realtime(uvicorn) as (connection, events):
        assert (await events.next())["type"] == "session.created"
        turn = await text_turn(connection, events, "hello uvicorn")
    assert transcripts(turn) == ["You said: hello uvicorn."]
