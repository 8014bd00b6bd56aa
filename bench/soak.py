"""Soak: two server processes, N sessions, a Redis and a PostgreSQL blip; is any usage lost?

`make soak` (or `python -m bench.soak [--sessions 20] [--seconds 90] [--redis-blip 10]
[--pg-blip 10]`) runs the production shape on this machine: its own Redis (a ``redis-server``
on a free port, stopped and restarted for the Redis blip), its own PostgreSQL database on
127.0.0.1:5432 (its connections refused and its backends terminated for the PostgreSQL blip),
two server processes serving it (``voiceplatform.serve``: uvicorn, production's server, or
``--server daphne``), and a scripted OpenAI stand-in whose every ``response.done``
carries a distinct, known usage. ``--sessions`` API clients (half on each process) talk for
``--seconds``: audio appends every 100 ms and one ``response.create`` after another. A client
whose session ends reconnects (to the other process), as the README tells API clients to.

Printed: sessions served, responses the upstream completed, the ledger's count and tokens
against the upstream's (usage lost must be 0, doubled must be 0), sessions left open, and each
server's RSS before (after warm-up) and after.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import websockets

from bench import procfs
from voiceplatform.serve import DEFAULT_SERVER, SERVERS

ROOT = Path(__file__).resolve().parents[1]
AUDIO = base64.b64encode(b"\x00\x01" * 2400).decode()  # 100 ms of 24 kHz pcm16
PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Upstream:
    """OpenAI's realtime socket, scripted: each response.create gets a short answer whose usage
    is unique (input = 100 + n, output = 200 + n tokens), recorded here as the truth."""

    def __init__(self) -> None:
        self.sent: dict[str, tuple[int, int]] = {}
        self.connections = 0
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            self.server = await websockets.serve(self._handler, "127.0.0.1", 0, max_size=None)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            await self.server.serve_forever()

        self.loop.run_until_complete(main())

    async def _handler(self, connection) -> None:
        with self._lock:
            self.connections += 1
            number = self.connections
        session = {"id": f"sess_soak_{number}", "object": "realtime.session",
                   "type": "realtime", "model": "gpt-realtime-2"}  # fmt: skip
        with contextlib.suppress(websockets.ConnectionClosed):
            await connection.send(json.dumps({"type": "session.created", "session": session}))
            answered = 0
            async for message in connection:
                event = json.loads(message)
                if event.get("type") == "session.update":
                    updated = {**event.get("session", {}), **session}
                    await connection.send(
                        json.dumps({"type": "session.updated", "session": updated})
                    )
                elif event.get("type") == "response.create":
                    answered += 1
                    await self._respond(connection, f"resp_soak_{number}_{answered}")

    async def _respond(self, connection, response_id: str) -> None:
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress",
                    "output": []}  # fmt: skip
        await connection.send(json.dumps({"type": "response.created", "response": response}))
        for _ in range(3):
            await connection.send(json.dumps({
                "type": "response.output_audio.delta", "event_id": "e",
                "response_id": response_id, "item_id": "item_" + response_id,
                "output_index": 0, "content_index": 0, "delta": AUDIO}))  # fmt: skip
            await asyncio.sleep(0.05)
        with self._lock:
            n = len(self.sent) % 1000
            tokens = (100 + n, 200 + n)
        usage = {"total_tokens": sum(tokens), "input_tokens": tokens[0], "output_tokens": tokens[1],
                 "input_token_details": {"text_tokens": tokens[0], "audio_tokens": 0},
                 "output_token_details": {"text_tokens": 0, "audio_tokens": tokens[1]}}  # fmt: skip
        done = {**response, "status": "completed", "usage": usage}
        # Recorded before it is sent: once sent, the platform owes it to the ledger.
        with self._lock:
            self.sent[response_id] = tokens
        await connection.send(json.dumps({"type": "response.done", "response": done}))


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            assert time.monotonic() < deadline, "redis did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


class Database:
    """A PostgreSQL database of our own, whose connections can be refused for a while."""

    def __init__(self) -> None:
        self.name = f"vp_soak_{os.getpid()}"
        with psycopg.connect(PG, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{self.name}"')
        self.url = f"postgres://postgres@127.0.0.1:5432/{self.name}"

    def refuse(self) -> None:
        with psycopg.connect(PG, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (self.name,),
            )

    def allow(self) -> None:
        with psycopg.connect(PG, autocommit=True) as connection:
            connection.execute(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def drop(self) -> None:
        with psycopg.connect(PG, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def query(self, sql: str) -> list[tuple]:
        with psycopg.connect(self.url) as connection:
            return connection.execute(sql).fetchall()


def manage(environ: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=environ, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return result.stdout


def serve(environ: dict, server: str, port: int, log: Path) -> subprocess.Popen:
    """The platform as production serves it (the Procfile's launcher) on ``port``."""
    process = subprocess.Popen(
        [sys.executable, "-m", "voiceplatform.serve", "--server", server,
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=environ, stdout=open(log, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )  # fmt: skip
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
            return process
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    raise SystemExit(f"{server} did not start")


class Clients:
    def __init__(self, ports: list[int], key: str, agent: str) -> None:
        self.ports = ports
        self.key = key
        self.agent = agent
        self.sessions = 0
        self.responses = 0
        self.endings: dict[str, int] = {}

    async def run(self, index: int, until: float) -> None:
        port = self.ports[index % len(self.ports)]
        while time.monotonic() < until:
            try:
                await self._session(port, until)
            except (OSError, websockets.WebSocketException) as error:
                self.endings[type(error).__name__] = self.endings.get(type(error).__name__, 0) + 1
                await asyncio.sleep(0.5)
            port = self.ports[(self.ports.index(port) + 1) % len(self.ports)]  # elsewhere

    async def _session(self, port: int, until: float) -> None:
        url = f"ws://127.0.0.1:{port}/v1/realtime?model=gpt-realtime-2&agent={self.agent}"
        headers = {"Authorization": f"Bearer {self.key}"}
        async with websockets.connect(url, additional_headers=headers, open_timeout=20) as ws:
            self.sessions += 1
            waiting = False
            next_audio = 0.0
            while time.monotonic() < until:
                now = time.monotonic()
                if now >= next_audio:
                    append = {"type": "input_audio_buffer.append", "audio": AUDIO}
                    await ws.send(json.dumps(append))
                    next_audio = now + 0.1
                if not waiting:
                    await ws.send(json.dumps({"type": "response.create"}))
                    waiting = True
                try:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 0.1))
                except TimeoutError:
                    continue
                if event["type"] == "response.done":
                    self.responses += 1
                    waiting = False
                elif event["type"] == "error":
                    code = event["error"].get("code") or "error"
                    self.endings[code] = self.endings.get(code, 0) + 1
            # A well-behaved client hangs up after the answer it asked for, not in its middle.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    while waiting:
                        if json.loads(await ws.recv())["type"] == "response.done":
                            self.responses += 1
                            waiting = False


def rss_mib(processes: list[subprocess.Popen]) -> list[float]:
    return [procfs.memory_kib(p.pid).get("VmRSS", 0) / 1024 for p in processes]


async def soak(args, clients: Clients, redis: Redis, database: Database) -> None:
    started = time.monotonic()
    until = started + args.seconds
    tasks = [asyncio.create_task(clients.run(index, until)) for index in range(args.sessions)]

    async def blips() -> None:
        await asyncio.sleep(args.seconds / 3)
        print(f"[{time.monotonic() - started:5.1f} s] Redis down for {args.redis_blip} s")
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(args.redis_blip)
        await asyncio.to_thread(redis.start)
        print(f"[{time.monotonic() - started:5.1f} s] Redis back (empty)")
        await asyncio.sleep(max(0.0, started + 2 * args.seconds / 3 - time.monotonic()))
        print(f"[{time.monotonic() - started:5.1f} s] PostgreSQL refused for {args.pg_blip} s")
        await asyncio.to_thread(database.refuse)
        await asyncio.sleep(args.pg_blip)
        await asyncio.to_thread(database.allow)
        print(f"[{time.monotonic() - started:5.1f} s] PostgreSQL back")

    await asyncio.gather(blips(), *tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--redis-blip", type=float, default=10.0)
    parser.add_argument("--pg-blip", type=float, default=10.0)
    parser.add_argument("--server", choices=SERVERS, default=DEFAULT_SERVER)
    args = parser.parse_args()

    upstream = Upstream()
    redis = Redis()
    database = Database()
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="vp-soak-") as data_dir:
        environ = {
            k: v for k, v in os.environ.items() if not k.startswith(("VP_", "DATABASE", "REDIS"))
        }
        environ.update({
            "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
            "VP_DATA_DIR": data_dir, "VP_LOG_LEVEL": "WARNING",
            "DATABASE_URL": database.url, "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            "OPENAI_API_KEY": "sk-soak-" + "x" * 30,
            "VP_OPENAI_REALTIME_URL": f"ws://127.0.0.1:{upstream.port}/v1/realtime",
        })  # fmt: skip
        try:
            manage(environ, "migrate", "--noinput", "-v0")
            setup = subprocess.run(
                [sys.executable, "-m", "bench.platform_setup"], cwd=ROOT, env=environ,
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            created = json.loads(setup.split("SETUP ", 1)[1])
            ports = [free_port(), free_port()]
            for number, port in enumerate(ports):
                # Each process its own journal folder, as on two machines.
                own = {**environ, "VP_JOURNAL_DIR": f"{data_dir}/journal-{number}"}
                log = Path(data_dir) / f"{args.server}-{number}.log"
                processes.append(serve(own, args.server, port, log))
            clients = Clients(ports, created["key"], created["agent"])
            before = rss_mib(processes)
            began = time.monotonic()
            asyncio.run(soak(args, clients, redis, database))
            after_run = rss_mib(processes)
            # Every session must end and every record reach the database (the journals drain).
            deadline = time.monotonic() + 120
            while True:
                open_sessions = database.query(
                    "SELECT count(*) FROM agents_session WHERE ended_at IS NULL"
                )[0][0]
                ledger = dict(database.query(
                    "SELECT upstream_response_id, input_text_tokens + output_audio_tokens"
                    " FROM billing_usageevent"))  # fmt: skip
                if (not open_sessions and len(ledger) >= len(upstream.sent)) or (
                    time.monotonic() > deadline
                ):
                    break
                time.sleep(0.5)
            truth = {key: sum(tokens) for key, tokens in upstream.sent.items()}
            lost = sorted(set(truth) - set(ledger))
            extra = sorted(set(ledger) - set(truth))
            wrong = [key for key in truth if key in ledger and ledger[key] != truth[key]]
            took = time.monotonic() - began
            print(f"sessions served: {clients.sessions} ({args.sessions} clients, "
                  f"{args.seconds:.0f} s, 2 {args.server} processes) in {took:.0f} s")  # fmt: skip
            print(f"responses completed upstream: {len(truth)}; seen by clients: "
                  f"{clients.responses}")  # fmt: skip
            print(f"ledger: {len(ledger)} responses, {sum(ledger.values())} tokens; upstream: "
                  f"{sum(truth.values())} tokens")  # fmt: skip
            print(f"usage lost: {len(lost)}; not from the upstream: {len(extra)}; "
                  f"tokens differing: {len(wrong)}")  # fmt: skip
            print(f"sessions left open: {open_sessions}; client-side endings: {clients.endings}")
            settled = rss_mib(processes)
            print(f"RSS MiB per {args.server} process: before "
                  + ", ".join(f"{v:.1f}" for v in before)
                  + " | after the run " + ", ".join(f"{v:.1f}" for v in after_run)
                  + " | after settling " + ", ".join(f"{v:.1f}" for v in settled))  # fmt: skip
            if lost:
                print("lost:", lost[:10])
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(60)
            redis.stop()
            database.drop()


if __name__ == "__main__":
    main()
