"""Clients that stop reading while the upstream streams audio: server memory and time to close.

`make bench-slow-reader` (or `python -m bench.slow_reader [--clients 10] [--audio-seconds 180]
[--server daphne|uvicorn]`) starts the platform under a real server with its upstream pointed at
a scripted OpenAI stand-in that answers each ``response.create`` with ``--audio-seconds`` of
audio deltas (100 ms each) as fast as the platform takes them, as OpenAI streams an answer
faster than real time. Each client sends ``response.create`` and then never reads again (its
transport stops reading, so the kernel's buffers fill and the server's buffer grows). Printed:
the server's RSS before, at peak and after, per client the time from the first delta to the
upstream's close (the platform ends a slow reader and closes its upstream at once), the close
codes the clients find when they read again, and how much audio each upstream got to send.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from datetime import datetime

from bench import procfs
from bench.wsproto_lite import connect

DELTA_MS = 100
AUDIO_DELTA = base64.b64encode(b"\x00\x01" * (24 * DELTA_MS)).decode()


class StreamingUpstream:
    """Per connection: session handshake, then on response.create a long stream of deltas."""

    def __init__(self, audio_seconds: float) -> None:
        self.deltas = int(audio_seconds * 1000 / DELTA_MS)
        self.started: dict[int, float] = {}
        self.started_wall: dict[int, float] = {}
        self.closed: dict[int, float] = {}
        self.sent: dict[int, int] = {}

    async def handler(self, connection) -> None:
        import websockets

        number = len(self.started) + len(self.closed) + 1
        session = {"id": f"sess_{number}", "object": "realtime.session", "type": "realtime"}
        try:
            await connection.send(json.dumps({"type": "session.created", "session": session}))
            update = json.loads(await connection.recv())
            await connection.send(json.dumps(
                {"type": "session.updated", "session": {**update["session"], **session}}
            ))  # fmt: skip
            while json.loads(await connection.recv()).get("type") != "response.create":
                pass
            response = {"id": f"resp_{number}", "object": "realtime.response",
                        "status": "in_progress", "output": []}  # fmt: skip
            await connection.send(json.dumps({"type": "response.created", "response": response}))
            frame = json.dumps({
                "type": "response.output_audio.delta", "event_id": "e",
                "response_id": response["id"], "item_id": "item_1", "output_index": 0,
                "content_index": 0, "delta": AUDIO_DELTA})  # fmt: skip
            self.started[number] = time.monotonic()
            self.started_wall[number] = time.time()
            self.sent[number] = 0
            for _ in range(self.deltas):
                await connection.send(frame)
                self.sent[number] += 1
            await connection.wait_closed()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed[number] = time.monotonic()


async def run(options) -> int:
    import websockets

    from bench.runner import PRODUCTION, Platform, free_port, server_argv, start, wait_port

    upstream = StreamingUpstream(options.audio_seconds)
    server = await websockets.serve(upstream.handler, "127.0.0.1", 0, max_size=None)
    upstream_port = server.sockets[0].getsockname()[1]
    platform = Platform()
    platform.prepare()
    environ = {**platform.env(upstream_port), "VP_RECONNECT_ATTEMPTS": "0"}
    port = free_port()
    argv = server_argv(options.server, port, upstream_port, PRODUCTION)
    process = start(options.server, argv, platform.dir, env=environ)
    await asyncio.to_thread(wait_port, port, process)
    try:
        rss_before = procfs.memory_kib(process.pid)["VmRSS"]
        procfs.reset_peak_rss(process.pid)
        clients = []
        for _ in range(options.clients):
            protocol = await connect(
                "127.0.0.1", port, f"/v1/realtime?model=gpt-realtime-2&agent={platform.agent}",
                {"Authorization": f"Bearer {platform.key}"}, timeout=10,
            )  # fmt: skip
            protocol.send_text(json.dumps({"type": "response.create"}))
            protocol.transport.pause_reading()  # from now on this client reads nothing
            clients.append(protocol)
        deadline = time.monotonic() + options.timeout
        while len(upstream.closed) < options.clients and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        memory = procfs.memory_kib(process.pid)
        closes = []
        for protocol in clients:  # read again: what was buffered, then the ending
            protocol.transport.resume_reading()
        for protocol in clients:
            try:
                await asyncio.wait_for(asyncio.shield(protocol.closed), 30)
            except TimeoutError:
                pass
            closes.append((protocol.close_code, protocol.close_reason))
        rss_after = procfs.memory_kib(process.pid)["VmRSS"]
    finally:
        process.stop()
        server.close()
        log = process.tail(10_000_000)
        platform.cleanup()
    times = [
        upstream.closed[n] - upstream.started[n] for n in upstream.started if n in upstream.closed
    ]
    verdicts = verdict_times(log)
    first = min(upstream.started_wall.values(), default=0.0)
    sent_s = [upstream.sent[n] * DELTA_MS / 1000 for n in upstream.sent]
    print(f"server: {options.server}; clients: {options.clients}; upstream audio per answer: "
          f"{options.audio_seconds:g} s, streamed as fast as taken")  # fmt: skip
    print(f"RSS before: {rss_before / 1024:.1f} MiB; peak: {memory['VmHWM'] / 1024:.1f} MiB "
          f"(+{(memory['VmHWM'] - rss_before) / 1024:.1f} MiB, "
          f"{(memory['VmHWM'] - rss_before) / 1024 / options.clients:.2f} MiB per client); "
          f"after: {rss_after / 1024:.1f} MiB")  # fmt: skip
    if verdicts:
        delays = [moment - first for moment in verdicts]
        print(f"first delta → slow-reader close sent: median {statistics.median(delays):.2f} s, "
              f"max {max(delays):.2f} s ({len(delays)} verdicts)")  # fmt: skip
    if times:
        print(f"first delta → upstream connection closed: median {statistics.median(times):.2f} s, "
              f"max {max(times):.2f} s ({len(times)}/{options.clients} closed)")  # fmt: skip
        print(f"audio the upstream got to send before the close: median "
              f"{statistics.median(sent_s):.1f} s of {options.audio_seconds:g} s")  # fmt: skip
    print("client close codes:", sorted({f"{code} {reason}" for code, reason in closes}))
    return 0 if len(times) == options.clients else 1


def verdict_times(log: str) -> list[float]:
    """Wall-clock times of the server's "client stopped reading" lines."""
    moments = []
    for line in log.splitlines():
        if "client stopped reading" in line:
            stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            moments.append(stamp.timestamp())
    return moments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--audio-seconds", type=float, default=180.0)
    parser.add_argument("--server", choices=("uvicorn", "daphne"), default="uvicorn")
    parser.add_argument("--timeout", type=float, default=120.0)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
