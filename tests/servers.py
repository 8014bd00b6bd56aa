"""The platform as a real server process (Daphne or uvicorn), for end-to-end tests.

``Platform`` migrates a fresh database, seeds the demo tenant (``manage.py seed_demo --json``
gives its keys and ids) and serves ``voiceplatform.asgi:application`` on a free port, in
embedded mode (SQLite, in-memory channel layer, the bundled local engine as upstream) unless
the environment says otherwise. What ``WebsocketCommunicator`` cannot show needs it: the
server's own frame limits and close-code rules, real clients over a real socket.
``ServerProcess`` is one more process on a platform's database (or the same one restarted);
``api_connect`` opens an API session's socket on any of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import websockets

from voiceplatform.serve import DEFAULT_SERVER
from voiceplatform.serve import SERVERS as ALL_SERVERS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
APP_MAX_MESSAGE = 32768
# What the server lets through (voiceplatform.serve: twice the application's limit).
DAPHNE_MAX_MESSAGE = SERVER_MAX_MESSAGE = 2 * APP_MAX_MESSAGE
# The production default first: a test on one server runs on DEFAULT_SERVER.
SERVERS = (DEFAULT_SERVER, *(s for s in ALL_SERVERS if s != DEFAULT_SERVER))
# A request line in either server's access log, its path (with the query) as logged:
# uvicorn `INFO:     127.0.0.1:5000 - "GET /path?q HTTP/1.1" 200 OK`,
# Daphne `127.0.0.1:5000 - - [30/Nov/2026:15:46:14] "GET /path?q" 200 1234`.
ACCESS_LOG_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S*)(?: HTTP/[\d.]+)?" \d{3}\b')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def manage(environ, *args, timeout=120) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not exited within 20 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def server_command(server: str, port: int, *, proxy_headers: bool = False) -> list[str]:
    """The command line that serves the platform on ``port`` with ``server``: production's own
    (``voiceplatform.serve``), the frame limits from ``VP_WS_MAX_MESSAGE_BYTES``."""
    if server not in SERVERS:
        raise ValueError(f"unknown server {server!r}: one of {SERVERS}")
    command = [
        sys.executable, "-m", "voiceplatform.serve", "--server", server,
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    return [*command, "--proxy-headers"] if proxy_headers else command


class ServerProcess:
    """One server process (``server``: "uvicorn", the default, or "daphne") serving the platform
    on ``port`` (a free one by default), its output in ``log_path``; started when it listens."""

    def __init__(
        self,
        environ,
        log_path: Path,
        *,
        server: str = DEFAULT_SERVER,
        port: int | None = None,
        proxy_headers: bool = False,
    ) -> None:
        self.proxy_headers = proxy_headers
        self.environ = environ
        self.server = server
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.start()

    def start(self) -> None:
        """Serve on ``port`` (again, after ``stop`` or a kill: the same port and environment)."""
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            server_command(self.server, self.port, proxy_headers=self.proxy_headers),
            cwd=ROOT,
            env=self.environ,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            if self.process.poll() is not None:
                self.log.close()
                raise AssertionError(f"{self.server} exited: {self.log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"{self.server} did not start")

    @property
    def http_url(self) -> str:
        return f"http://{self.host}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}"

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()

    def log_tail(self, chars: int = 4000) -> str:
        self.log.flush()
        return self.log_path.read_text()[-chars:]


class Platform(ServerProcess):
    """A migrated, seeded platform served by ``server`` ("uvicorn", the default, or "daphne")."""

    def __init__(self, environ, tmp_path, server: str = DEFAULT_SERVER, proxy_headers=False):
        manage(environ, "migrate", "--noinput", "-v0", timeout=300)
        self.seed = json.loads(manage(environ, "seed_demo", "--json"))
        super().__init__(
            environ, Path(tmp_path) / f"{server}.log", server=server, proxy_headers=proxy_headers
        )

    def shell(self, code: str) -> str:
        return manage(self.environ, "shell", "-c", code).strip()

    def open_session_id(self) -> int:
        return int(
            self.shell(
                "from tenants.scoping import scopes_disabled; from agents.models import Session\n"
                "with scopes_disabled(): print(Session.objects.get(ended_at__isnull=True).pk)"
            ).splitlines()[-1]
        )

    def session_rows(self) -> list:
        return json.loads(
            self.shell(
                "import json; from tenants.scoping import scopes_disabled; "
                "from agents.models import Session\n"
                "with scopes_disabled(): print(json.dumps(list(Session.objects.order_by('pk')"
                ".values_list('channel', 'end_reason'))))"
            ).splitlines()[-1]
        )


def api_connect(ws_url: str, api_key: str, **options):
    """An API session's socket on ``ws_url`` (``websockets.connect``: await it, or enter it)."""
    return websockets.connect(
        f"{ws_url}/v1/realtime?model=gpt-realtime-2",
        additional_headers={"Authorization": f"Bearer {api_key}"},
        **options,
    )


async def events_until_closed(connection, timeout: float = 10) -> list[dict]:
    """Every event the socket receives until it is closed (each within ``timeout`` s)."""
    events = []
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            events.append(json.loads(await asyncio.wait_for(connection.recv(), timeout)))
    return events


def base_environ(tmp_path, **extra):
    """The test process's environment without platform settings, plus a private data dir."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("VP_", "DATABASE", "REDIS"))
    }
    environ.update(
        {
            "VP_DATA_DIR": str(tmp_path),
            "VP_WS_MAX_MESSAGE_BYTES": str(APP_MAX_MESSAGE),
            "VP_LOG_LEVEL": "WARNING",
            # Every test client mints widget tokens from 127.0.0.1 (abuse limits: their own tests).
            "VP_WIDGET_SESSION_RATE_PER_ADDRESS": "100000/m",
            **extra,
        }
    )
    return environ
