"""deploy/nginx.conf in front of two real server processes (production's, as in the Procfile):
the file an operator copies, with only its ports and certificate swapped for the test's.

Needs the ``nginx`` binary (.ci/run installs it); skipped with the reason when it is absent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
import websockets

from tests.conftest import IN_CI
from tests.servers import (
    DEFAULT_SERVER,
    ROOT,
    Platform,
    base_environ,
    free_port,
    server_command,
    stop_process,
)
from tests.waiting import until_sync

EXAMPLE = ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def test_the_example_outlasts_a_session_and_passes_what_the_platform_needs():
    text = EXAMPLE.read_text()
    timeouts = [int(value) for value in re.findall(r"proxy_read_timeout (\d+)s;", text)]
    assert max(timeouts) > 3600  # longer than a 60-minute provider session
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in text
    # Overwritten: an appended X-Forwarded-For would let a client choose its address.
    assert "$proxy_add_x_forwarded_for" not in text
    assert len(re.findall(r"^\s+server 127\.0\.0\.1:\d+", text, re.MULTILINE)) == 2


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    certificate, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return certificate, key


def site_config(upstreams: list[int], http_port: int, https_port: int, cert, key) -> str:
    """The example with the test's addresses: nothing else changes."""
    text = EXAMPLE.read_text()
    text = text.replace("server 127.0.0.1:8001", f"server 127.0.0.1:{upstreams[0]}")
    text = text.replace("server 127.0.0.1:8002", f"server 127.0.0.1:{upstreams[1]}")
    text = text.replace(
        "listen 80 default_server;", f"listen 127.0.0.1:{http_port} default_server;"
    )
    text = text.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    text = text.replace("return 301 https://$host$request_uri;",
                        f"return 301 https://$host:{https_port}$request_uri;")  # fmt: skip
    text = re.sub(r"ssl_certificate .*;", f"ssl_certificate {cert};", text)
    text = re.sub(r"ssl_certificate_key .*;", f"ssl_certificate_key {key};", text)
    for port in (8001, 8002, 80, 443):
        assert f":{port}" not in text and f"listen {port}" not in text
    return text


def main_config(folder: Path, site: Path) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read the test's private files
    temp = "\n".join(
        f"    {name}_temp_path {folder / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    access_log {folder / 'access.log'};\n{temp}\n    include {site};\n}}\n"
    )


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def behind_nginx(tmp_path):
    if NGINX is None:
        if IN_CI:
            pytest.fail("nginx is required in CI (.ci/run installs it)")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    environ = base_environ(tmp_path, VP_LOCAL_ENGINE_REALTIME_PACING="false", VP_LOG_LEVEL="INFO")
    first = Platform(environ, tmp_path, proxy_headers=True)
    second_port = free_port()
    second_log = open(tmp_path / "server2.log", "w")  # noqa: SIM115 - closed below
    second = subprocess.Popen(
        server_command(DEFAULT_SERVER, second_port, proxy_headers=True), cwd=ROOT, env=environ,
        stdout=second_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    folder = tmp_path / "nginx"
    folder.mkdir()
    http_port, https_port = free_port(), free_port()
    cert, key = self_signed_certificate(folder)
    site = folder / "site.conf"
    site.write_text(site_config([first.port, second_port], http_port, https_port, cert, key))
    (folder / "nginx.conf").write_text(main_config(folder, site))
    nginx = subprocess.Popen(
        [NGINX, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        until_sync(lambda: port_open(second_port), "the second server", timeout=30)
        until_sync(
            lambda: nginx.poll() is not None or (port_open(http_port) and port_open(https_port)),
            "nginx to listen",
        )
        assert nginx.poll() is None, nginx.stderr.read().decode()
        yield {
            "platform": first,
            "http": f"http://127.0.0.1:{http_port}",
            "https": f"https://127.0.0.1:{https_port}",
            "wss": f"wss://127.0.0.1:{https_port}",
            "logs": [first.log_path, tmp_path / "server2.log"],
        }
    finally:
        stop_process(nginx)
        stop_process(second)
        second_log.close()
        first.stop()


def insecure_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def fetch(url: str, host: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    opener = urllib.request.build_opener(
        NoRedirect, urllib.request.HTTPSHandler(context=insecure_context())
    )
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def realtime_text_turn(wss: str, api_key: str, text: str) -> tuple[str, str, str]:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with websockets.connect(
        f"{wss}/v1/realtime?model=gpt-realtime-2",
        additional_headers=headers,
        ssl=insecure_context(),
        max_size=16 * 1024 * 1024,
    ) as connection:
        created = json.loads(await connection.recv())
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        await connection.send(json.dumps({"type": "conversation.item.create", "item": item}))
        await connection.send(json.dumps({"type": "response.create"}))
        transcript = ""
        while True:
            event = json.loads(await connection.recv())
            if event["type"] == "response.output_audio_transcript.done":
                transcript = event["transcript"]
            if event["type"] == "response.done":
                return created["type"], event["response"]["status"], transcript


def test_a_page_the_probes_and_a_realtime_session_through_nginx(behind_nginx):
    # A page over https, through nginx to the servers.
    status, _, body = fetch(f"{behind_nginx['https']}/login/", host="127.0.0.1")
    assert status == 200, body[:500]
    assert b"<form" in body

    # Plain http: the probes answer with a backend address as Host; the rest goes to https.
    status, _, body = fetch(f"{behind_nginx['http']}/readyz", host="10.20.30.40")
    assert status == 200, body
    assert json.loads(body)["status"] == "ready"
    status, _, body = fetch(f"{behind_nginx['http']}/livez", host="10.20.30.40")
    assert (status, json.loads(body)) == (200, {"status": "alive"})
    status, headers, _ = fetch(f"{behind_nginx['http']}/login/", host="127.0.0.1")
    assert status == 301
    assert headers["Location"].startswith("https://127.0.0.1:")

    # Both server processes serve behind the one upstream.
    def both_served() -> bool:
        fetch(f"{behind_nginx['http']}/readyz", host="10.20.30.40")
        return all("/readyz" in Path(log).read_text() for log in behind_nginx["logs"])

    until_sync(both_served, "both server processes to answer a probe")

    # A realtime session: the WebSocket upgrade through nginx, a turn, a billed response.
    seed = behind_nginx["platform"].seed
    created, status, transcript = asyncio.run(
        asyncio.wait_for(
            realtime_text_turn(behind_nginx["wss"], seed["api_key"], "hello there"), 60
        )
    )
    assert (created, status) == ("session.created", "completed")
    assert transcript


def test_the_procfile_web_processes_are_the_upstreams():
    lines = (ROOT / "Procfile").read_text().splitlines()
    ports = sorted(
        match.group(1)
        for line in lines
        if (match := re.match(r"web\d*: python -m voiceplatform\.serve .*?--port (\d+)\b", line))
    )
    upstreams = re.findall(r"server 127\.0\.0\.1:(\d+)", EXAMPLE.read_text())
    assert len(ports) == 2
    assert ports == sorted(upstreams)
