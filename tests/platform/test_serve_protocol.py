"""voiceplatform.serve's uvicorn protocol, served by a real uvicorn server to a real client:
reading pauses only when the application is ``ws_max_queue`` messages behind (uvicorn's own
pauses after every message), everything queued meanwhile arrives in order, and a text message
is written at once only while nothing stands in the way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
import uvicorn
import websockets

from voiceplatform.serve import WS_MAX_QUEUE, RelayWebSocketProtocol


class CountingProtocol(RelayWebSocketProtocol):
    """Counts the transport's read pauses (the stock protocol pauses after every message)."""

    instances: list[CountingProtocol] = []

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.pauses = 0
        original = transport.pause_reading

        def pause_reading() -> None:
            self.pauses += 1
            original()

        transport.pause_reading = pause_reading  # an asyncio transport: a plain attribute
        CountingProtocol.instances.append(self)


App = Callable[[dict, Callable, Callable], Awaitable[None]]


@pytest.fixture
async def serve():
    servers: list[tuple[uvicorn.Server, asyncio.Task]] = []
    CountingProtocol.instances = []

    async def start(app: App) -> str:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, loop="asyncio", ws=CountingProtocol,
            ws_max_queue=WS_MAX_QUEUE, lifespan="off", log_level="warning",
            timeout_graceful_shutdown=2,
        )  # fmt: skip
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "uvicorn did not start"
                await asyncio.sleep(0.01)
        servers.append((server, task))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    yield start
    for server, task in servers:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def test_a_keeping_up_application_never_pauses_reading_and_gets_direct_writes(serve):
    written_at_once: list[bool] = []

    async def echo(scope, receive, send) -> None:
        await receive()  # websocket.connect
        assert not send.__self__.send_text_nowait("before the accept")  # nothing written
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            written_at_once.append(send.__self__.send_text_nowait(message["text"]))

    url = await serve(echo)
    async with websockets.connect(url) as client:
        for number in range(100):
            await client.send(f"frame {number}")
            assert await client.recv() == f"frame {number}"
    [protocol] = CountingProtocol.instances
    assert protocol.pauses == 0
    assert written_at_once == [True] * 100


async def test_an_application_that_falls_behind_pauses_reading_at_the_queue_limit(serve):
    release = asyncio.Event()
    received: list[str] = []

    async def slow(scope, receive, send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while (message := await receive())["type"] == "websocket.receive":
            received.append(message["text"])
            if message["text"] == "frame 39":
                await send({"type": "websocket.send", "text": "all read"})

    url = await serve(slow)
    async with websockets.connect(url) as client:
        for number in range(WS_MAX_QUEUE):
            await client.send(f"frame {number}")
            async with asyncio.timeout(10):  # the server has read it
                while not CountingProtocol.instances or (
                    CountingProtocol.instances[0].queue.qsize() < number + 1
                ):
                    await asyncio.sleep(0.005)
            [protocol] = CountingProtocol.instances
            # Reading pauses once the limit waits, not before.
            assert protocol.read_paused == (number + 1 == WS_MAX_QUEUE), number
        for number in range(WS_MAX_QUEUE, 40):
            await client.send(f"frame {number}")  # waits in the socket meanwhile
        assert protocol.pauses == 1
        release.set()
        assert await asyncio.wait_for(client.recv(), 10) == "all read"
        assert not protocol.read_paused
    assert received == [f"frame {number}" for number in range(40)]


async def test_no_direct_write_once_the_close_is_sent(serve):
    answers: list[bool] = []

    async def closing(scope, receive, send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        answers.append(send.__self__.send_text_nowait("after the close"))

    url = await serve(closing)
    async with websockets.connect(url) as client:
        with pytest.raises(websockets.ConnectionClosedError) as closed:
            await client.recv()  # the close, and nothing written after it
    assert closed.value.rcvd.code == 4000
    assert answers == [False]
