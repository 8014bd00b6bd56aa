"""Every row of the close table, under a real Daphne and a real uvicorn process.

Each way a session can end must reach the client as one ``error`` event and one close whose
code and reason say why, within 2 s of the cause, and the session row must record the end:
closes differ between servers (Daphne refuses 1001/1008/1011/1013 and drops ASGI close
reasons), which the Channels communicator cannot show. The upstream here is a scripted OpenAI
stand-in run by the test (the platform's agent has provider "openai" and its URL points here);
what it does on the next connection is the test's choice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar

import pytest
import websockets

from agents.realtime.relay.closing import CLOSE_TABLE
from bench import wsproto_lite
from tests.servers import SERVERS, Platform, api_connect, base_environ
from tests.upstreams import ScriptedUpstream, scripted_agent_create

DELIVERY_S = 2.0  # cause → error event and close at the client


class ClosesPlatform:
    def __init__(self, tmp_path, server: str) -> None:
        self.upstream = ScriptedUpstream()
        environ = base_environ(
            tmp_path,
            **self.upstream.environ,
            VP_RECONNECT_ATTEMPTS="0",
            VP_WS_SEND_BUFFER_BYTES="262144",
            VP_WS_SEND_STALL_SECONDS="3",
        )
        self.platform = Platform(environ, tmp_path, server=server)
        created = scripted_agent_create(self.platform)
        self.api_key = created["api_key"]
        self.agent_id = created["agent_id"]

    def stop(self) -> None:
        self.platform.stop()
        self.upstream.stop()

    def shell(self, code: str) -> str:
        return self.platform.shell(code)


@pytest.fixture(scope="module", params=SERVERS)
def closes(request, tmp_path_factory):
    platform = ClosesPlatform(tmp_path_factory.mktemp(f"closes-{request.param}"), request.param)
    yield platform
    platform.stop()


@pytest.fixture
def upstream(closes):
    closes.upstream.mode = "normal"
    yield closes.upstream
    closes.upstream.mode = "normal"


def connect(closes, **options):
    return api_connect(closes.platform.ws_url, closes.api_key, **options)


async def ending_of(connection, timeout: float = DELIVERY_S) -> tuple[dict, int, str]:
    """The error event that names the ending, and the close that follows, within ``timeout``."""
    deadline = time.monotonic() + timeout
    error = None
    try:
        while True:
            remaining = deadline - time.monotonic()
            event = json.loads(await asyncio.wait_for(connection.recv(), max(remaining, 0.01)))
            if event["type"] == "error":
                error = event["error"]
    except websockets.ConnectionClosed:
        pass
    assert error is not None, "no error event before the close"
    assert connection.close_code is not None
    assert time.monotonic() <= deadline + 0.05, "the close came late"
    return error, connection.close_code, connection.close_reason


def last_session_end(closes) -> str:
    for _ in range(100):
        row = closes.shell(
            "from tenants.scoping import scopes_disabled; from agents.models import Session\n"
            "with scopes_disabled(): s = Session.objects.order_by('-pk').first(); "
            "print('end:' + (s.end_reason if s.ended_at else ''))"
        ).splitlines()[-1]
        if row != "end:":
            return row.removeprefix("end:")
    raise AssertionError("the session row was never ended")


def expect(code: str):
    row = CLOSE_TABLE[code]
    return row.code, row.close_code, row.end_reason


@pytest.mark.parametrize(
    ("mode", "code"),
    [
        ("refuse401", "upstream_auth_failed"),
        ("refuse429", "upstream_rate_limited"),
        ("refuse503", "upstream_unavailable"),
    ],
)
async def test_upstream_refusals(closes, upstream, mode, code):
    upstream.mode = mode
    async with connect(closes) as connection:
        error, close_code, reason = await ending_of(connection, timeout=15)
    assert (error["code"], close_code, reason) == expect(code)[:2] + (code,)
    assert last_session_end(closes) == "upstream_error"


@pytest.mark.parametrize(
    ("mode", "code"), [("drop", "upstream_closed"), ("expire", "session_expired")]
)
async def test_upstream_endings(closes, upstream, mode, code):
    upstream.mode = mode
    async with connect(closes) as connection:
        assert json.loads(await connection.recv())["type"] == "session.created"
        await connection.send(json.dumps({"type": "response.create"}))
        error, close_code, reason = await ending_of(connection)
    assert (error["code"], close_code, reason) == expect(code)[:2] + (code,)
    assert last_session_end(closes) == expect(code)[2]


async def test_audio_flood(closes, upstream):
    frame = json.dumps(
        {
            "type": "input_audio_buffer.append",
            "audio": base64.b64encode(b"\x00\x00" * 480).decode(),
        }
    )  # 20 ms each
    async with connect(closes) as connection:
        assert json.loads(await connection.recv())["type"] == "session.created"
        for _ in range(1000):  # 20 s of audio at once: 15 s past the burst allowance
            await connection.send(frame)
        error, close_code, reason = await ending_of(connection)
    assert (error["code"], close_code, reason) == expect("audio_flood")[:2] + ("audio_flood",)
    assert last_session_end(closes) == "policy_violation"


async def test_budget_exhausted(closes, upstream):
    # $0.01 left whatever the module's earlier tests (one platform, any order) spent.
    closes.shell(
        "from tenants.models import Tenant; from tenants.scoping import scopes_disabled\n"
        "from decimal import Decimal; from billing.selectors import tenant_month_spend\n"
        "with scopes_disabled():\n"
        "    demo = Tenant.objects.get(slug='demo')\n"
        "    demo.monthly_budget_usd = tenant_month_spend(tenant_id=demo.pk) + Decimal('0.01')\n"
        "    demo.save(update_fields=['monthly_budget_usd'])"
    )
    try:
        async with connect(closes) as connection:
            assert json.loads(await connection.recv())["type"] == "session.created"
            await connection.send(json.dumps({"type": "response.create"}))
            error, close_code, reason = await ending_of(connection)
    finally:
        closes.shell(
            "from tenants.models import Tenant; from tenants.scoping import scopes_disabled\n"
            "with scopes_disabled(): Tenant.objects.filter(slug='demo')"
            ".update(monthly_budget_usd=None)"
        )
    expected = expect("budget_exhausted")
    assert (error["code"], close_code, reason) == expected[:2] + ("budget_exhausted",)
    assert last_session_end(closes) == expected[2]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def console_end_session(platform, session_id: int) -> int:
    """Log in as the demo owner and press "End session": the answer's status."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar), _NoRedirect())
    page = opener.open(f"{platform.http_url}/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    seed = platform.seed
    form = {"username": seed["username"], "password": seed["password"],
            "csrfmiddlewaretoken": token}  # fmt: skip
    try:
        opener.open(f"{platform.http_url}/login/", urllib.parse.urlencode(form).encode())
    except urllib.error.HTTPError as redirect:
        assert redirect.code == 302, redirect.code
    csrf = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    request = urllib.request.Request(
        f"{platform.http_url}/t/{seed['tenant']}/sessions/{session_id}/end/",
        data=b"", headers={"X-CSRFToken": csrf, "Referer": platform.http_url + "/"},
    )  # fmt: skip
    try:
        return opener.open(request).status
    except urllib.error.HTTPError as answer:
        return answer.code


async def test_ended_by_an_admin_in_the_console(closes, upstream):
    async with connect(closes) as connection:
        assert json.loads(await connection.recv())["type"] == "session.created"
        session_id = closes.platform.open_session_id()
        status = await asyncio.to_thread(console_end_session, closes.platform, session_id)
        assert status == 302
        error, close_code, reason = await ending_of(connection)
    assert (error["code"], close_code, reason) == expect("session_ended")[:2] + ("session_ended",)
    assert last_session_end(closes) == "ended_by_admin"


async def test_slow_reader_is_closed_and_the_upstream_with_it(closes, upstream):
    upstream.mode = "stream"
    path = f"/v1/realtime?model=gpt-realtime-2&agent={closes.agent_id}"
    client = await wsproto_lite.connect(
        "127.0.0.1", closes.platform.port, path,
        {"Authorization": f"Bearer {closes.api_key}"}, timeout=10,
    )  # fmt: skip
    received: list[str] = []
    client.on_text = received.append
    upstream.hung_up.clear()
    client.send_text(json.dumps({"type": "response.create"}))
    client.transport.pause_reading()  # from now on the client reads nothing
    # The relay closes the upstream first, then sends the error event and its close; the
    # server drops a peer that does not answer a close within a second (Autobahn's close
    # handshake timeout), so the client reads again as soon as the upstream is hung up on.
    assert await asyncio.to_thread(upstream.hung_up.wait, 60)
    connections = upstream.connections
    # Reading again: what was buffered, then the ending and its close.
    client.transport.resume_reading()
    await asyncio.wait_for(asyncio.shield(client.closed), 15)
    assert await asyncio.to_thread(last_session_end, closes) == "slow_reader"
    events = [json.loads(text) for text in client.pending + received]
    errors = [event["error"]["code"] for event in events if event["type"] == "error"]
    assert errors == ["slow_reader"]
    assert (client.close_code, client.close_reason) == (4010, "slow_reader")
    assert upstream.connections == connections  # and nothing reconnected behind its back


async def test_an_upstream_event_too_large_for_the_client_socket_loses_its_audio(closes, upstream):
    """Larger than the server may send (Daphne fails the send): the relay strips the audio the
    client already has from the deltas and goes on; the answer after it arrives and is billed."""
    upstream.mode = "huge"
    async with connect(closes) as connection:
        assert json.loads(await connection.recv())["type"] == "session.created"
        await connection.send(json.dumps({"type": "response.create"}))
        events = []
        while not events or events[-1]["type"] != "response.done":
            events.append(json.loads(await asyncio.wait_for(connection.recv(), 10)))
    big = next(event for event in events if event["type"] == "conversation.item.added")
    assert big["item"]["content"] == [{"type": "input_audio", "audio": None, "transcript": "hello"}]
    assert [event["type"] for event in events if event["type"] == "error"] == []
    assert events[-1]["response"]["id"] == "resp_after_big"
    assert last_session_end(closes) == "client_closed"
