"""The control plane outlives quiet, Redis restarts and Redis outages (real processes).

Two server processes share a PostgreSQL database and a Redis of this module's own (a
``redis-server`` on a free port, without persistence, that the tests stop and restart; never
the shared one). Sessions live in process A; the console (its "End session" button and its live
view) is served by process B, so everything between them crosses the channel layer.

* After 60 s of quiet (longer than redis 8's 5 s socket timeout and channels-redis's 5 s
  blocking pop), the live view in B still streams the session in A, and "End session" in B
  ends it; after a Redis restart that forgets every group, both work again once the sessions
  have re-joined (they re-join on their own within seconds).
* With Redis down for 60 s, new sessions are admitted and talk; once Redis is back, a session
  admitted during the outage can be ended from the console.

Both need PostgreSQL (two processes, one database): they run when ``DATABASE_URL`` is set, as
in CI's second pass. The loops themselves are also checked in-process against a failing layer,
in every run, and the console page's reconnect in Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest
import websockets

from tests.servers import Platform, ServerProcess, api_connect, base_environ
from tests.services import OwnDatabase, OwnRedis
from tests.waiting import until_sync


def real_processes(test):
    """Two server processes (one PostgreSQL database) and a redis-server of the test's own."""
    test = pytest.mark.skipif(
        not os.environ.get("DATABASE_URL"),
        reason="two server processes need a shared database: set DATABASE_URL (PostgreSQL)",
    )(test)
    return pytest.mark.skipif(
        shutil.which("redis-server") is None, reason="no redis-server binary"
    )(test)


QUIET_S = 60.0  # the scenario itself: a wait, not a poll
OUTAGE_S = 60.0
PREFIX = "vpcp"


def has_member(own_redis: OwnRedis, group: str) -> bool:
    """The channel layer's ``group`` has a member in the deployment's Redis."""
    import redis

    try:
        with own_redis.client() as client:
            return client.zcard(f"{PREFIX}:channels::group:{group}") > 0
    except redis.RedisError:
        return False


class Deployment:
    def __init__(self, tmp_path: Path) -> None:
        self.redis = OwnRedis(tmp_path)
        self.database = OwnDatabase("postgresql", tmp_path, "cp")
        self.environ = base_environ(
            tmp_path, **self.database.environ, REDIS_URL=self.redis.url, VP_REDIS_PREFIX=PREFIX
        )
        self.a = Platform(self.environ, tmp_path)
        self.b = ServerProcess(self.environ, tmp_path / "daphne-b.log")

    def stop(self) -> None:
        self.b.stop()
        self.a.stop()
        self.redis.stop()
        self.database.drop()

    def logs(self) -> str:
        return self.a.log_tail(3000) + self.b.log_tail(3000)

    def open_session_ids(self) -> list[int]:
        return json.loads(
            self.a.shell(
                "import json; from tenants.scoping import scopes_disabled; "
                "from agents.models import Session\n"
                "with scopes_disabled(): print(json.dumps(list(Session.objects.filter("
                "ended_at__isnull=True).order_by('pk').values_list('pk', flat=True))))"
            ).splitlines()[-1]
        )

    def end_reason(self, session_id: int) -> str:
        return self.a.shell(
            "from tenants.scoping import scopes_disabled; from agents.models import Session\n"
            f"with scopes_disabled(): print('end:' + Session.objects.get(pk={session_id})"
            ".end_reason)"
        ).splitlines()[-1]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    deployment = Deployment(tmp_path_factory.mktemp("control-plane"))
    yield deployment
    deployment.stop()


class Console:
    """A logged-in console user of process B: presses "End session", opens the live view."""

    def __init__(self, base_url: str, seed: dict) -> None:
        self.base_url = base_url
        self.seed = seed
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        page = self.opener.open(f"{base_url}/login/").read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        form = {"username": seed["username"], "password": seed["password"],
                "csrfmiddlewaretoken": token}  # fmt: skip
        self.opener.open(f"{base_url}/login/", urllib.parse.urlencode(form).encode())
        assert self.cookie("sessionid"), "the console login failed"

    def cookie(self, name: str) -> str:
        return next((cookie.value for cookie in self.jar if cookie.name == name), "")

    def end_session(self, session_id: int) -> None:
        request = urllib.request.Request(
            f"{self.base_url}/t/{self.seed['tenant']}/sessions/{session_id}/end/", data=b"",
            headers={"X-CSRFToken": self.cookie("csrftoken"), "Referer": self.base_url + "/"},
        )  # fmt: skip
        assert self.opener.open(request).status == 200  # redirected to the session's page

    def live(self, session_id: int):
        host = self.base_url.removeprefix("http://")
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in self.jar)
        return websockets.connect(
            f"ws://{host}/ws/console/t/{self.seed['tenant']}/sessions/{session_id}/",
            additional_headers={"Cookie": cookies, "Origin": self.base_url},
        )


def session_connect(deployment: Deployment):
    return api_connect(deployment.a.ws_url, deployment.a.seed["api_key"])


async def talk(connection, text: str) -> str:
    """One text turn with the local engine: the answer's transcript."""
    await connection.send(json.dumps({"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": text}]}}))  # fmt: skip
    await connection.send(json.dumps({"type": "response.create"}))
    transcript = ""
    while True:
        event = json.loads(await asyncio.wait_for(connection.recv(), 30))
        if event["type"] == "response.output_audio_transcript.done":
            transcript = event["transcript"]
        if event["type"] == "response.done":
            assert event["response"]["status"] == "completed", event
            return transcript


async def transcript_heard(live, text: str) -> None:
    """The live view streams the turn: an item with ``text`` arrives."""
    while True:
        message = json.loads(await asyncio.wait_for(live.recv(), 30))
        if message["type"] == "transcript" and text in (message["item"].get("text") or ""):
            return


async def ended_by_admin(connection) -> tuple[str, int]:
    error = None
    with contextlib.suppress(websockets.ConnectionClosed):
        while True:
            event = json.loads(await asyncio.wait_for(connection.recv(), 15))
            if event["type"] == "error":
                error = event["error"]["code"]
    return error, connection.close_code


async def live_ended(live) -> str:
    while True:
        message = json.loads(await asyncio.wait_for(live.recv(), 15))
        if message["type"] == "ended":
            return message["reason"]


@real_processes
async def test_end_session_and_live_view_after_quiet_and_a_redis_restart(deployment):
    console = await asyncio.to_thread(Console, deployment.b.http_url, deployment.a.seed)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(session_connect(deployment))
        assert json.loads(await first.recv())["type"] == "session.created"
        second = await stack.enter_async_context(session_connect(deployment))
        assert json.loads(await second.recv())["type"] == "session.created"
        first_id, second_id = await asyncio.to_thread(deployment.open_session_ids)
        first_live = await stack.enter_async_context(console.live(first_id))
        second_live = await stack.enter_async_context(console.live(second_id))

        # Quiet: no message on any socket or channel for longer than every Redis timeout.
        await asyncio.sleep(QUIET_S)

        # The live view in B still streams the session in A, and "End session" in B ends it.
        await talk(first, "after the quiet")
        await transcript_heard(first_live, "after the quiet")
        await asyncio.to_thread(console.end_session, first_id)
        assert await ended_by_admin(first) == ("session_ended", 4000)
        assert await live_ended(first_live) == "ended_by_admin"
        async with console.live(first_id) as again:  # a page that reconnects after the end
            ended = json.loads(await asyncio.wait_for(again.recv(), 10))
        assert ended == {"type": "ended", "reason": "ended_by_admin"}

        # A Redis restart without persistence forgets every group; the session and the live
        # view in the other process join theirs again by themselves.
        deployment.redis.stop()
        deployment.redis.start()
        for group in (f"vp-session-{second_id}", f"vp-session-live-{second_id}"):
            await asyncio.to_thread(
                until_sync, lambda group=group: has_member(deployment.redis, group),
                f"{group} re-joined after the restart", 30,
            )  # fmt: skip
        await talk(second, "after the restart")
        await transcript_heard(second_live, "after the restart")
        await asyncio.to_thread(console.end_session, second_id)
        assert await ended_by_admin(second) == ("session_ended", 4000)
        assert await live_ended(second_live) == "ended_by_admin"

    assert await asyncio.to_thread(deployment.end_reason, first_id) == "end:ended_by_admin"
    assert await asyncio.to_thread(deployment.end_reason, second_id) == "end:ended_by_admin"


@real_processes
async def test_sessions_are_admitted_and_talk_while_redis_is_down(deployment):
    console = await asyncio.to_thread(Console, deployment.b.http_url, deployment.a.seed)
    deployment.redis.stop()
    try:
        outage_ends = time.monotonic() + OUTAGE_S
        answers = []
        kept = None
        kept_id = None
        # A new session every few seconds through the whole outage: each is admitted and talks.
        while time.monotonic() < outage_ends:
            connection = await session_connect(deployment)
            assert json.loads(await asyncio.wait_for(connection.recv(), 10))["type"] == (
                "session.created"
            )
            answers.append(await talk(connection, f"outage turn {len(answers)}"))
            if kept is None:  # the first stays open across the outage
                kept = connection
                kept_id = (await asyncio.to_thread(deployment.open_session_ids))[-1]
            else:
                await connection.close()
            await asyncio.sleep(min(3.0, max(0.0, outage_ends - time.monotonic())))
    finally:
        deployment.redis.start()
    assert len(answers) >= 6, deployment.logs()
    assert answers == [f"You said: outage turn {number}." for number in range(len(answers))]

    # Redis is back: the session admitted during the outage joins its group, and the console
    # (process B) can end it.
    await asyncio.to_thread(
        until_sync, lambda: has_member(deployment.redis, f"vp-session-{kept_id}"),
        "the session admitted during the outage to join its group", 30,
    )  # fmt: skip
    await asyncio.to_thread(console.end_session, kept_id)
    assert await ended_by_admin(kept) == ("session_ended", 4000)
    assert await asyncio.to_thread(deployment.end_reason, kept_id) == "end:ended_by_admin"


# Every WebSocket the console page opens, for the test to close one under it.
TRACK_SOCKETS = """
window.vpTestSockets = [];
const Native = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const socket = protocols === undefined ? new Native(url) : new Native(url, protocols);
  window.vpTestSockets.push(socket);
  return socket;
};
window.WebSocket.prototype = Native.prototype;
"""


@pytest.mark.browser
async def test_the_console_live_view_reconnects_when_its_socket_closes(tmp_path):
    """Chromium on a live session's page: its socket is closed under it (as a deploy or a
    proxy timeout would); the page opens another and goes on showing the conversation."""
    from selenium.webdriver.common.by import By

    from tests.browser.conftest import platform_and_browser

    platform, driver = platform_and_browser(tmp_path)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": TRACK_SOCKETS})
        driver.get(f"{platform.origin}/login/")
        driver.find_element(By.ID, "id_username").send_keys(platform.seed["username"])
        driver.find_element(By.ID, "id_password").send_keys(platform.seed["password"])
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        async with websockets.connect(
            f"ws://127.0.0.1:{platform.port}/v1/realtime?model=gpt-realtime-2",
            additional_headers={"Authorization": f"Bearer {platform.seed['api_key']}"},
        ) as session:
            assert json.loads(await session.recv())["type"] == "session.created"
            session_id = int(
                platform.shell(
                    "from tenants.scoping import scopes_disabled; "
                    "from agents.models import Session\n"
                    "with scopes_disabled(): print(Session.objects.get(ended_at__isnull=True).pk)"
                ).splitlines()[-1]
            )
            driver.get(f"{platform.origin}/t/{platform.seed['tenant']}/sessions/{session_id}/")

            def sockets_open() -> int:
                return driver.execute_script(
                    "return vpTestSockets.filter(s => s.readyState === 1).length"
                )

            until_sync(lambda: sockets_open() == 1, "the live view's socket")
            driver.execute_script("vpTestSockets[0].close(4000, 'gone')")
            until_sync(lambda: sockets_open() == 1, "the page to open another socket")
            assert driver.execute_script("return vpTestSockets.length") == 2

            await talk(session, "after the reconnect")
            await asyncio.to_thread(
                until_sync,
                lambda: "after the reconnect" in driver.find_element(By.ID, "transcript").text,
                "the live view to show the turn",
            )
    finally:
        driver.quit()
        platform.stop()
