"""End to end against a real server process: embedded (SQLite) under each supported server,
and on PostgreSQL + Redis under production's (uvicorn).

What ``WebsocketCommunicator`` cannot show: the server's own frame limits (Daphne and uvicorn
differ), the official SDK over a real socket, and cross-process control through the Redis
channel layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
import websockets
from django.conf import settings
from openai import AsyncOpenAI

from tests.conftest import require_service
from tests.run_isolation import REDIS_PREFIX, redis_url
from tests.servers import SERVER_MAX_MESSAGE, SERVERS, Platform, base_environ, manage
from tests.services import OwnDatabase

# How each server ends a connection whose message is over its own limit.
OVERSIZE_CLOSE = {
    "daphne": 1006,  # autobahn drops the connection without a close frame
    "uvicorn": 1009,  # "message too big", a close frame the client sees
}


@pytest.fixture(params=SERVERS)
def embedded_platform(request, tmp_path):
    platform = Platform(base_environ(tmp_path), tmp_path, server=request.param)
    yield platform
    platform.stop()


@pytest.fixture
def services_platform(tmp_path):
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    database = OwnDatabase("postgresql", tmp_path, "e2e")
    environ = base_environ(
        tmp_path, **database.environ, REDIS_URL=redis_url(), VP_REDIS_PREFIX=REDIS_PREFIX
    )
    platform = None
    try:
        platform = Platform(environ, tmp_path)
        yield platform
    finally:
        if platform is not None:
            platform.stop()
        database.drop()


async def sdk_text_turn(platform: Platform, text: str) -> list[str]:
    client = AsyncOpenAI(
        api_key=platform.seed["api_key"], websocket_base_url=f"ws://127.0.0.1:{platform.port}/v1"
    )
    async with client.realtime.connect(model="gpt-realtime-2") as connection:
        await connection.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }
        )
        await connection.response.create()
        transcript = []
        async for event in connection:
            if event.type == "response.output_audio_transcript.done":
                transcript.append(event.transcript)
            if event.type == "response.done":
                assert event.response.status == "completed"
                return transcript
    raise AssertionError("no response.done")


async def frame_limits(platform: Platform) -> tuple[str, int | None]:
    url = f"ws://127.0.0.1:{platform.port}/v1/realtime?model=gpt-realtime-2"
    headers = {"Authorization": f"Bearer {platform.seed['api_key']}"}
    async with websockets.connect(url, additional_headers=headers) as connection:
        await connection.recv()  # session.created (the configured session; nothing follows)
        # Over the app's limit, under the server's: a clear error, and the session goes on.
        await connection.send(json.dumps({"type": "conversation.item.create", "x": "y" * 40000}))
        error = json.loads(await connection.recv())
        await connection.send(json.dumps({"type": "input_audio_buffer.clear"}))
        cleared = json.loads(await connection.recv())
        assert cleared["type"] == "input_audio_buffer.cleared"
        # Over the server's own limit: Daphne (autobahn) drops the connection (1006), uvicorn
        # closes with 1009; either way no event says why, which is why the platform's limit sits
        # well below the server's and answers with a clear error.
        await connection.send("z" * (SERVER_MAX_MESSAGE + 10))
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await connection.recv()
        return error["error"]["code"], connection.close_code


def test_sdk_through_each_server_embedded(embedded_platform):
    transcript = asyncio.run(sdk_text_turn(embedded_platform, "hello from the server"))
    assert transcript == ["You said: hello from the server."]
    assert asyncio.run(frame_limits(embedded_platform)) == (
        "frame_too_large",
        OVERSIZE_CLOSE[embedded_platform.server],
    )
    report = json.loads(
        manage(embedded_platform.environ, "usage_report", "--tenant", "demo", "--json")
    )
    assert report["models"]["gpt-realtime-2"]["responses"] == 1
    assert embedded_platform.session_rows() == [
        ["api", "client_closed"],
        ["api", "client_closed"],
    ]


@pytest.mark.services
def test_postgresql_and_redis_with_cross_process_end(services_platform):
    from channels_redis.core import RedisChannelLayer

    transcript = asyncio.run(sdk_text_turn(services_platform, "hello from postgres"))
    assert transcript == ["You said: hello from postgres."]

    async def ended_by_another_process():
        url = f"ws://127.0.0.1:{services_platform.port}/v1/realtime?model=gpt-realtime-2"
        headers = {"Authorization": f"Bearer {services_platform.seed['api_key']}"}
        async with websockets.connect(url, additional_headers=headers) as connection:
            await asyncio.wait_for(connection.recv(), timeout=10)  # session.created
            session_id = await asyncio.to_thread(services_platform.open_session_id)
            layer = RedisChannelLayer(
                hosts=[redis_url()],
                prefix=f"{REDIS_PREFIX}:channels:",
                symmetric_encryption_keys=settings.VP_CHANNEL_LAYER_KEYS,
            )  # the server's own layer (its keys too), in this run's namespace
            await layer.group_send(
                f"vp-session-{session_id}",
                {"type": "session.end_requested", "reason": "ended_by_admin"},
            )
            event = json.loads(await asyncio.wait_for(connection.recv(), timeout=10))
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(connection.recv(), timeout=10)
            return event["error"]["code"], connection.close_code

    assert asyncio.run(ended_by_another_process()) == ("session_ended", 4000)
    rows = services_platform.session_rows()
    assert rows == [["api", "client_closed"], ["api", "ended_by_admin"]]
