"""The official openai SDK talks to ``/v1/realtime`` through the project's full ASGI application.

uvicorn serves ``voiceplatform.asgi.application`` inside the test's event loop, so the server
shares the test database (``transaction=True``); agents run on the bundled local engine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from typing import Any

import pytest
import uvicorn
import websockets
from asgiref.sync import sync_to_async
from openai import AsyncOpenAI

from agents.models import Agent, Session, TranscriptItem
from agents.realtime import audio, speech
from billing.models import UsageEvent
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import api_key_issue, api_key_revoke
from tests.spoken import spoken

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # uvicorn's "websockets" (legacy) implementation, as the brief asks for it.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated"),
]

MODEL = "gpt-realtime-2"
INSTRUCTIONS = "Secret house rules: be brief."
UTTERANCE = "what is the status of my order"
# A 1x1 transparent PNG.
TINY_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


# --- fixtures ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def server_port():
    """The project's ASGI application served by uvicorn in this event loop."""
    from voiceplatform.asgi import application

    port = free_port()
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="warning",
        ws="websockets",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done():
            task.result()  # raises the startup error
        assert time.monotonic() < deadline, "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


def agent_create(tenant, *, name: str = "Support", **fields: Any) -> Agent:
    fields.setdefault("provider", "local")
    fields.setdefault("model", MODEL)
    fields.setdefault("instructions", INSTRUCTIONS)
    with tenant_scope(tenant):
        return Agent.objects.create(tenant=tenant, name=name, **fields)


@pytest.fixture
def api_setup(world):
    """Tenant A's local agent and an API key defaulting to it; tenant B has an agent too."""
    agent = agent_create(world.tenant_a)
    other_agent = agent_create(world.tenant_b, name="B's agent")
    api_key, raw_key = api_key_issue(tenant=world.tenant_a, name="backend", default_agent=agent)
    return {
        "world": world,
        "agent": agent,
        "other_agent": other_agent,
        "api_key": api_key,
        "raw_key": raw_key,
    }


@pytest.fixture(scope="module")
def utterance_pcm() -> bytes:
    speech.warm_up()
    return spoken(UTTERANCE)


@pytest.fixture(scope="module")
def turn_pcm(utterance_pcm: bytes) -> bytes:
    """0.5 s silence + the utterance + 1 s silence: one full server-VAD turn."""
    return audio.silence(500) + utterance_pcm + audio.silence(1000)


# --- helpers -------------------------------------------------------------------------------


def sdk_connect(port: int, raw_key: str, **kwargs: Any):
    client = AsyncOpenAI(api_key=raw_key, websocket_base_url=f"ws://127.0.0.1:{port}/v1")
    return client.realtime.connect(model=MODEL, **kwargs)


async def until(conn, event_type: str, timeout: float = 20) -> list[Any]:
    """SDK events received up to and including the first of ``event_type``."""
    events = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {event_type} within {timeout}s; got {[e.type for e in events]}"
        event = await asyncio.wait_for(conn.recv(), remaining)
        events.append(event)
        if event.type == event_type:
            return events


async def open_session(conn) -> Any:
    """The first event is session.created with the agent's configuration folded in; no
    unsolicited session.updated follows (the client did not ask for one)."""
    created = await conn.recv()
    assert created.type == "session.created"
    return created


def user_text(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def transcript_of(events: list[Any]) -> str:
    return "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")


async def text_turn(conn, text: str) -> list[Any]:
    await conn.conversation.item.create(item=user_text(text))
    await conn.response.create()
    return await until(conn, "response.done")


def _sessions(tenant_id: int) -> list[Session]:
    with scopes_disabled():
        return list(Session.objects.filter(tenant_id=tenant_id).order_by("pk"))


async def ended_sessions(tenant_id: int, count: int = 1, timeout: float = 10) -> list[Session]:
    """The tenant's sessions once ``count`` of them have recorded their end."""
    deadline = time.monotonic() + timeout
    while True:
        sessions = await sync_to_async(_sessions)(tenant_id)
        if sum(1 for s in sessions if s.ended_at is not None) >= count:
            return sessions
        assert time.monotonic() < deadline, "the session end was not recorded"
        await asyncio.sleep(0.05)


@sync_to_async
def usage_events(tenant_id: int) -> list[UsageEvent]:
    with scopes_disabled():
        return list(UsageEvent.objects.filter(tenant_id=tenant_id).order_by("pk"))


@sync_to_async
def transcript_items(session_id: int) -> list[TranscriptItem]:
    with scopes_disabled():
        return list(TranscriptItem.objects.filter(session_id=session_id).order_by("sequence"))


@sync_to_async
def all_session_count() -> int:
    with scopes_disabled():
        return Session.objects.count()


def assert_usage_row(row: UsageEvent, done: Any) -> None:
    usage = done.response.usage
    details = usage.input_token_details
    assert row.upstream_response_id == done.response.id
    assert row.status == done.response.status
    assert row.provider == "local"
    assert row.model == MODEL
    assert row.input_text_tokens == details.text_tokens
    assert row.input_audio_tokens == details.audio_tokens
    assert row.input_image_tokens == details.image_tokens
    assert row.output_text_tokens == usage.output_token_details.text_tokens
    assert row.output_audio_tokens == usage.output_token_details.audio_tokens
    assert row.input_tokens + row.output_tokens == usage.total_tokens


# --- tests ---------------------------------------------------------------------------------


async def test_text_turn_is_answered_and_recorded(server_port, api_setup):
    tenant = api_setup["world"].tenant_a
    async with sdk_connect(server_port, api_setup["raw_key"]) as conn:
        created = await open_session(conn)
        assert created.session.model == MODEL
        assert created.session.instructions == INSTRUCTIONS  # a backend may see its own
        events = await text_turn(conn, "hello platform")
        done = events[-1]
        assert done.response.status == "completed"
        assert transcript_of(events) == "You said: hello platform."
        assert done.response.output[0].content[0].transcript == "You said: hello platform."
        assert done.response.usage.total_tokens > 0

    (session,) = await ended_sessions(tenant.pk)
    assert session.channel == "api"
    assert session.agent_id == api_setup["agent"].pk
    assert session.model == MODEL
    assert session.end_reason == "client_closed"
    assert session.ended_at is not None
    assert session.upstream_session_ids == [created.session.id]

    (row,) = await usage_events(tenant.pk)
    assert_usage_row(row, done)
    assert row.session_id == session.pk
    assert row.agent_id == api_setup["agent"].pk

    items = await transcript_items(session.pk)
    assert [(i.sequence, i.role, i.kind, i.text) for i in items] == [
        (0, "user", "message", "hello platform"),
        (1, "assistant", "message", "You said: hello platform."),
    ]
    assert items[1].upstream_item_id == done.response.output[0].id
    # Nothing leaked into the other tenant.
    assert await ended_sessions(tenant.pk) == [session]
    assert await usage_events(api_setup["world"].tenant_b.pk) == []


async def test_audio_turn_with_server_vad(server_port, api_setup, turn_pcm):
    tenant = api_setup["world"].tenant_a
    chunk = 960  # 20 ms of PCM16 at 24 kHz
    sent_bytes = 0
    async with sdk_connect(server_port, api_setup["raw_key"]) as conn:
        created = await open_session(conn)
        assert created.session.audio.input.turn_detection.type == "server_vad"
        assert created.session.audio.input.transcription.model == "gpt-realtime-whisper"
        # 3.5 s of audio, inside the 5 s burst allowance: no need to pace it.
        for start in range(0, len(turn_pcm), chunk):
            piece = turn_pcm[start : start + chunk]
            sent_bytes += len(piece)
            await conn.input_audio_buffer.append(audio=base64.b64encode(piece).decode())
        events = await until(conn, "response.done", timeout=30)
        types = [e.type for e in events]
        assert "error" not in types
        transcribed = next(
            e for e in events if e.type == "conversation.item.input_audio_transcription.completed"
        )
        heard = transcribed.transcript  # eSpeak's audio varies a little: a word may be misheard
        assert "status" in heard and "order" in heard
        done = events[-1]
        assert done.response.status == "completed"
        assert transcript_of(events) == f"You said: {heard}."
        audio_out = b"".join(
            base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta"
        )
        assert len(audio_out) > 48 * 1000  # more than a second of spoken answer
        assert types.index("conversation.item.input_audio_transcription.completed") < types.index(
            "response.done"
        )

    (session,) = await ended_sessions(tenant.pk)
    assert sent_bytes == len(turn_pcm)
    assert session.audio_in_ms == sent_bytes // 48
    assert session.audio_out_ms == len(audio_out) // 48
    (row,) = await usage_events(tenant.pk)
    assert_usage_row(row, done)
    assert row.input_audio_tokens > 0
    items = await transcript_items(session.pk)
    assert [(i.role, i.text) for i in items] == [
        ("user", heard),
        ("assistant", f"You said: {heard}."),
    ]
    assert items[0].upstream_item_id == transcribed.item_id


async def test_cancel_keeps_the_usage_of_the_cancelled_response(server_port, api_setup):
    tenant = api_setup["world"].tenant_a
    # A long answer, so that the cancel arrives while its audio still streams.
    long_text = " ".join(["please read this long sentence back to me slowly"] * 12)
    async with sdk_connect(server_port, api_setup["raw_key"]) as conn:
        await open_session(conn)
        await conn.conversation.item.create(item=user_text(long_text))
        await conn.response.create()
        before = await until(conn, "response.output_audio.delta")
        await conn.response.cancel()
        after = await until(conn, "response.done")
        done = after[-1]
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        assert not [e for e in after if e.type == "error"]
        assert len(transcript_of(before + after)) < len(f"You said: {long_text}.")

    await ended_sessions(tenant.pk)
    (row,) = await usage_events(tenant.pk)
    assert_usage_row(row, done)
    assert row.status == "cancelled"
    assert row.output_audio_tokens > 0


async def test_truncate_an_answer(server_port, api_setup):
    async with sdk_connect(server_port, api_setup["raw_key"]) as conn:
        await open_session(conn)
        events = await text_turn(conn, "tell me something")
        item_id = events[-1].response.output[0].id
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=200)
        truncated = (await until(conn, "conversation.item.truncated"))[-1]
        assert truncated.item_id == item_id
        assert truncated.content_index == 0
        assert truncated.audio_end_ms == 200


async def test_image_item_is_answered_and_counted(server_port, api_setup):
    tenant = api_setup["world"].tenant_a
    async with sdk_connect(server_port, api_setup["raw_key"]) as conn:
        await open_session(conn)
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look."},
                    {"type": "input_image", "image_url": TINY_PNG},
                ],
            }
        )
        await conn.response.create()
        events = await until(conn, "response.done")
        done = events[-1]
        assert done.response.status == "completed"
        assert transcript_of(events) == "I see an image. You said: Look."
        assert done.response.usage.input_token_details.image_tokens == 85

    (session,) = await ended_sessions(tenant.pk)
    items = await transcript_items(session.pk)
    assert [(i.role, i.text, i.data) for i in items] == [
        ("user", "Look.", {"images": 1}),
        ("assistant", "I see an image. You said: Look.", {"status": "completed"}),
    ]
    (row,) = await usage_events(tenant.pk)
    assert_usage_row(row, done)
    assert row.input_image_tokens == 85


async def test_usage_is_written_exactly_once_per_response(server_port, api_setup):
    tenant = api_setup["world"].tenant_a
    response_ids: list[str] = []
    dones = {}
    async with sdk_connect(server_port, api_setup["raw_key"]) as conn:
        await open_session(conn)
        for text in ("one", "two", "three"):
            done = (await text_turn(conn, text))[-1]
            response_ids.append(done.response.id)
            dones[done.response.id] = done
        # An out-of-band response (no conversation) is billed too.
        await conn.response.create(response={"conversation": "none"})
        done = (await until(conn, "response.done"))[-1]
        response_ids.append(done.response.id)
        dones[done.response.id] = done

    assert len(set(response_ids)) == 4
    (session,) = await ended_sessions(tenant.pk)
    rows = await usage_events(tenant.pk)
    assert [row.upstream_response_id for row in rows] == response_ids
    for row in rows:
        assert row.session_id == session.pk
        assert_usage_row(row, dones[row.upstream_response_id])


async def test_session_update_is_clamped(server_port, api_setup):
    async with sdk_connect(server_port, api_setup["raw_key"]) as conn:
        await open_session(conn)
        await conn.session.update(
            session={
                "type": "realtime",
                "model": "gpt-realtime-mini",
                "instructions": "Speak like a pirate.",
            }
        )
        updated = (await until(conn, "session.updated"))[-1]
        assert updated.session.model == MODEL
        assert updated.session.instructions == "Speak like a pirate."

        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {"output": {"voice": "not-a-voice"}},
                "instructions": "never applied",
            },
            event_id="evt_bad_voice",
        )
        error = await asyncio.wait_for(conn.recv(), 10)
        assert error.type == "error"
        assert error.error.code == "invalid_value"
        assert error.error.param == "session.audio.output.voice"
        assert error.error.event_id == "evt_bad_voice"

        events = await text_turn(conn, "still there")
        assert [e.type for e in events if e.type in ("error", "session.updated")] == []
        assert events[-1].response.status == "completed"
        assert transcript_of(events) == "You said: still there."


# --- refusals (plain websockets: exact close codes) -----------------------------------------


async def refused(port: int, raw_key: str, query: str = "") -> tuple[dict, int, str]:
    """The error event and close code of a refused ``/v1/realtime`` connection."""
    url = f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}{query}"
    async with websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {raw_key}"}
    ) as ws:
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        error.pop("event_id")  # random per event
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    return error, closed.value.rcvd.code, closed.value.rcvd.reason


async def test_foreign_and_missing_agents_are_refused_alike(server_port, api_setup):
    raw_key = api_setup["raw_key"]
    foreign = await refused(server_port, raw_key, f"&agent={api_setup['other_agent'].pk}")
    missing = await refused(server_port, raw_key, "&agent=999999")
    assert foreign == missing
    error, code, reason = foreign
    assert error["type"] == "error"
    assert error["error"]["code"] == "agent_not_found"
    assert code == 4404
    assert reason == "agent_not_found"
    assert await all_session_count() == 0
    assert await usage_events(api_setup["world"].tenant_b.pk) == []


async def test_sdk_sees_the_refusal_of_a_foreign_agent(server_port, api_setup):
    async with sdk_connect(
        server_port, api_setup["raw_key"], extra_query={"agent": api_setup["other_agent"].pk}
    ) as conn:
        error = await asyncio.wait_for(conn.recv(), 10)
        assert error.type == "error"
        assert error.error.code == "agent_not_found"
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(conn.recv(), 10)
        assert closed.value.rcvd.code == 4404
    assert await all_session_count() == 0


async def test_invalid_and_revoked_keys_are_refused(server_port, api_setup):
    error, code, _ = await refused(server_port, "vp_live_not-a-real-key")
    assert (error["error"]["code"], code) == ("invalid_api_key", 4401)

    await sync_to_async(api_key_revoke)(api_key=api_setup["api_key"])
    error, code, _ = await refused(server_port, api_setup["raw_key"])
    assert (error["error"]["code"], code) == ("invalid_api_key", 4401)
    assert await all_session_count() == 0


async def test_a_key_without_the_realtime_scope_is_refused(server_port, api_setup):
    world, agent = api_setup["world"], api_setup["agent"]
    _, rest_only = await sync_to_async(api_key_issue)(
        tenant=world.tenant_a, name="reports", default_agent=agent, scopes=["read", "write"]
    )
    error, code, _ = await refused(server_port, rest_only)
    assert (error["error"]["code"], code) == ("insufficient_scope", 4403)
    assert await all_session_count() == 0


async def test_explicit_agent_of_own_tenant_is_accepted(server_port, api_setup):
    async with sdk_connect(
        server_port, api_setup["raw_key"], extra_query={"agent": api_setup["agent"].pk}
    ) as conn:
        await open_session(conn)
        events = await text_turn(conn, "ok")
        assert events[-1].response.status == "completed"
    (session,) = await ended_sessions(api_setup["world"].tenant_a.pk)
    assert session.agent_id == api_setup["agent"].pk


@pytest.mark.parametrize(
    "session",
    [
        {"type": "realtime", "audio": {"output": None}},
        {"type": "realtime", "audio": "loud"},
        {"type": "realtime", "reasoning": "high"},
    ],
    ids=["output-null", "audio-string", "reasoning-string"],
)
async def test_malformed_session_update_gets_an_error_and_the_session_survives(
    server_port, api_setup, session
):
    url = f"ws://127.0.0.1:{server_port}/v1/realtime?model={MODEL}"
    headers = {"Authorization": f"Bearer {api_setup['raw_key']}"}
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "session.created"
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert error["type"] == "error"
        assert error["error"]["code"] == "invalid_value"
        await ws.send(json.dumps({"type": "conversation.item.create", "item": user_text("hi")}))
        await ws.send(json.dumps({"type": "response.create"}))
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert event["type"] != "error", event
            if event["type"] == "response.done":
                break
        assert event["response"]["status"] == "completed"
