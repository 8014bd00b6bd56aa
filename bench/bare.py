"""The yardstick: a relay written with ``websockets`` alone, nothing else on the frame path.

``python -m bench.bare --port P --upstream ws://127.0.0.1:E`` accepts ``/v1/realtime?...``,
opens the same path on the upstream and forwards text frames both ways until either side leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

MAX_SIZE = 16 * 1024 * 1024


async def _pump(source, sink) -> None:
    send = sink.send
    async for message in source:
        await send(message)


def _handler_for(upstream: str):
    async def handler(client) -> None:
        async with connect(
            upstream + client.request.path,
            max_size=MAX_SIZE,
            compression=None,
            ping_interval=None,
            open_timeout=30,
        ) as up:
            tasks = [
                asyncio.create_task(_pump(client, up)),
                asyncio.create_task(_pump(up, client)),
            ]
            _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task

    return handler


async def main(host: str, port: int, upstream: str) -> None:
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(
        _handler_for(upstream.rstrip("/")),
        host,
        port,
        max_size=MAX_SIZE,
        compression=None,
        ping_interval=None,
    ):
        print(f"LISTENING {port}", flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="ws://host:port (the path is the client's)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port, args.upstream))
