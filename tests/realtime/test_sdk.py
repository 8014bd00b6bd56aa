"""The official openai SDK talks to the standalone local engine server."""

from __future__ import annotations

import pytest
from openai import AsyncOpenAI
from openai.types.realtime import ResponseDoneEvent, SessionUpdatedEvent

from agents.realtime.server import serve

pytestmark = pytest.mark.asyncio


async def test_sdk_text_turn_against_standalone_server():
    server = await serve("127.0.0.1", 0, max_session_seconds=60)
    port = server.sockets[0].getsockname()[1]
    try:
        client = AsyncOpenAI(api_key="x", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
        async with client.realtime.connect(model="gpt-realtime-2") as conn:
            created = await conn.recv()
            assert created.type == "session.created"
            await conn.session.update(
                session={
                    "type": "realtime",
                    "instructions": "Be terse.",
                    "output_modalities": ["text"],
                }
            )
            updated = await conn.recv()
            assert isinstance(updated, SessionUpdatedEvent)
            assert updated.session.instructions == "Be terse."
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hello engine"}],
                }
            )
            await conn.response.create()
            text = ""
            async for event in conn:
                if event.type == "response.output_text.delta":
                    text += event.delta
                if event.type == "response.done":
                    break
            assert isinstance(event, ResponseDoneEvent)
            assert event.response.status == "completed"
            assert text == "You said: hello engine."
            usage = event.response.usage
            assert usage is not None
            assert usage.input_tokens == 3 + 3  # "Be terse." + "hello engine"
            assert usage.output_tokens == 6  # "You said: hello engine."
            assert usage.total_tokens == 12
    finally:
        server.close()
        await server.wait_closed()


async def test_server_rejects_other_paths():
    import websockets

    server = await serve("127.0.0.1", 0, max_session_seconds=60)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(f"ws://127.0.0.1:{port}/nope"):
                pass
    finally:
        server.close()
        await server.wait_closed()


async def test_server_session_expired_closes_1001():
    import json

    import websockets

    server = await serve("127.0.0.1", 0, max_session_seconds=0.3)
    port = server.sockets[0].getsockname()[1]
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/realtime?model=m") as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            error = json.loads(await ws.recv())
            assert error["error"]["code"] == "session_expired"
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1001
    finally:
        server.close()
        await server.wait_closed()
