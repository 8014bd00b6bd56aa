"""The upstream connection's short path for text frames (``RelayClientConnection``) sends what
websockets' own path sends, in order, and leaves everything else to it: a transport that
pauses writing holds the next send until it resumes; a closed connection raises."""

from __future__ import annotations

import asyncio

import pytest
import websockets
from websockets.exceptions import ConnectionClosedOK

from agents.upstream import RelayClientConnection


@pytest.fixture
async def recording_server():
    received: list[str | bytes] = []
    done = asyncio.Event()

    async def handler(connection) -> None:
        async for message in connection:
            received.append(message)
            if message == "last":
                done.set()

    async with websockets.serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", received, done


async def test_text_frames_arrive_in_order_beside_websockets_own_path(recording_server):
    url, received, done = recording_server
    async with websockets.connect(url, create_connection=RelayClientConnection) as upstream:
        assert isinstance(upstream, RelayClientConnection)
        sent = [f'{{"type":"input_audio_buffer.append","audio":"{i:04d}"}}' for i in range(200)]
        for number, message in enumerate(sent):
            if number % 50 == 0:
                await upstream.send(message.encode())  # bytes: websockets' own path
            else:
                await upstream.send(message)
        await upstream.send(["fragmented ", "message"])  # fragments: its own path too
        await upstream.send("last")
        await asyncio.wait_for(done.wait(), 5)
    assert received == [
        message.encode() if number % 50 == 0 else message for number, message in enumerate(sent)
    ] + ["fragmented message", "last"]


async def test_a_paused_transport_holds_the_next_send_until_it_resumes(recording_server):
    url, received, done = recording_server
    async with websockets.connect(url, create_connection=RelayClientConnection) as upstream:
        upstream.pause_writing()  # what the transport calls above its high-water mark
        held = asyncio.create_task(upstream.send("held"))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not held.done()
        upstream.resume_writing()
        await asyncio.wait_for(held, 5)
        await upstream.send("last")
        await asyncio.wait_for(done.wait(), 5)
    assert received == ["held", "last"]


async def test_a_closed_connection_raises_as_websockets_does(recording_server):
    url, _, _ = recording_server
    upstream = await websockets.connect(url, create_connection=RelayClientConnection)
    await upstream.close()
    with pytest.raises(ConnectionClosedOK):
        await upstream.send("after the close")
