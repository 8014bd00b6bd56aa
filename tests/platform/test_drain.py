"""SIGTERM drains a real server process (Daphne, and uvicorn): nobody is cut off unannounced.

Ten API sessions each have an answer in flight (a scripted OpenAI stand-in streams it over a
few seconds, with known usage) when the process gets SIGTERM. Each client must hear its answer
to the end (``response.done``), then get the ``server_restarting`` error event and close 4012
"server_restarting" (1012's twin: Daphne cannot send 1012), all within ``VP_DRAIN_SECONDS``; a
socket opened during the drain is refused the same way; the process exits on its own; and the
ledger holds exactly the upstream's usage, token for token. The readiness endpoint reports the
drain from the signal on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import urllib.error
import urllib.request

import pytest

from tests.servers import SERVERS, Platform, api_connect, base_environ, events_until_closed
from tests.upstreams import ScriptedUpstream, scripted_agent_create
from tests.waiting import until_sync

DRAIN_SECONDS = 20
SESSIONS = 10
ANSWER_DELTAS = 30  # one every 0.1 s: a 3 s answer, in flight when SIGTERM comes


class SlowUpstream(ScriptedUpstream):
    """Answers each ``response.create`` with audio over a few seconds, then ``response.done``."""

    def __init__(self) -> None:
        super().__init__(mode="slow")

    async def _slow(self, connection) -> None:
        number = 0
        async for message in connection:
            if json.loads(message).get("type") == "response.create":
                number += 1
                await self._respond(
                    connection, f"resp_{id(connection)}_{number}", deltas=ANSWER_DELTAS, pause=0.1
                )


@pytest.fixture(params=SERVERS)
def draining(request, tmp_path):
    upstream = SlowUpstream()
    environ = base_environ(
        tmp_path,
        **upstream.environ,
        VP_RECONNECT_ATTEMPTS="0",
        VP_DRAIN_SECONDS=str(DRAIN_SECONDS),
    )
    platform = Platform(environ, tmp_path, server=request.param)
    created = scripted_agent_create(platform)
    yield platform, upstream, created["api_key"]
    platform.stop()
    upstream.stop()


def draining_check(platform: Platform) -> dict:
    """The readiness endpoint's ``draining`` check (the endpoint is 503 for other reasons too:
    no Celery worker beats in this test)."""
    try:
        body = urllib.request.urlopen(f"{platform.http_url}/readyz", timeout=5).read()
    except urllib.error.HTTPError as answer:
        body = answer.read()
    return json.loads(body)["checks"]["draining"]


LEDGER = r"""
import json
from django.db.models import F, Sum
from billing.models import UsageEvent
from agents.models import Session
from tenants.scoping import scopes_disabled
with scopes_disabled():
    tokens = UsageEvent.objects.aggregate(total=Sum(
        F("input_text_tokens") + F("input_audio_tokens") + F("output_text_tokens")
        + F("output_audio_tokens")))["total"]
    print(json.dumps({
        "responses": UsageEvent.objects.count(), "tokens": tokens,
        "ends": sorted(Session.objects.values_list("end_reason", flat=True)),
        "open": Session.objects.filter(ended_at__isnull=True).count()}))
"""


async def test_sigterm_drains_every_session_and_bills_every_answer(draining):
    platform, upstream, api_key = draining
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(api_connect(platform.ws_url, api_key))
                   for _ in range(SESSIONS)]  # fmt: skip
        for client in clients:
            assert json.loads(await client.recv())["type"] == "session.created"
            await client.send(json.dumps({"type": "response.create"}))
        for client in clients:  # every answer is in flight
            assert json.loads(await client.recv())["type"] == "response.created"

        assert draining_check(platform) == {"ok": True, "draining": False}
        platform.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Readiness fails at once, so that the load balancer sends new sockets elsewhere.
        await asyncio.to_thread(
            until_sync, lambda: draining_check(platform)["draining"], "readiness to fail", 2
        )
        assert draining_check(platform) == {"ok": False, "draining": True}

        # A new socket during the drain is refused with the code clients reconnect on.
        async with api_connect(platform.ws_url, api_key) as late:
            refused = await events_until_closed(late, 60)
        assert [event["error"]["code"] for event in refused] == ["server_restarting"]
        assert (late.close_code, late.close_reason) == (4012, "server_restarting")

        endings = await asyncio.gather(*(events_until_closed(client, 60) for client in clients))
        told_within = time.monotonic() - signalled

    for client, events in zip(clients, endings, strict=True):
        types = [event["type"] for event in events]
        # The answer in flight was heard to its end, then the client was told why.
        assert types[-2:] == ["response.done", "error"], types[-5:]
        assert types.count("response.output_audio.delta") == ANSWER_DELTAS
        assert events[-1]["error"]["code"] == "server_restarting"
        assert (client.close_code, client.close_reason) == (4012, "server_restarting")
    assert told_within < DRAIN_SECONDS

    # The process exits by itself once drained.
    await asyncio.to_thread(platform.process.wait, DRAIN_SECONDS)

    ledger = json.loads(platform.shell(LEDGER).splitlines()[-1])
    assert len(upstream.sent) == SESSIONS
    assert ledger == {
        "responses": SESSIONS,
        "tokens": sum(usage["total_tokens"] for usage in upstream.sent.values()),
        "ends": ["server_shutdown"] * SESSIONS,
        "open": 0,
    }


@pytest.mark.browser
def test_the_widget_reconnects_with_a_fresh_token_when_its_server_restarts(tmp_path):
    """Chromium with the demo page: SIGTERM its Daphne, start another on the same port (a
    single-server restart); the widget, told 4012 server_restarting, fetches a new token from
    the page's endpoint and talks to the new process, microphone and panel untouched."""
    from tests.browser.conftest import platform_and_browser

    platform, driver = platform_and_browser(tmp_path)
    try:
        driver.get(f"{platform.origin}/widget/demo/")
        state = lambda: driver.execute_script("return VoicePlatformWidget.state")  # noqa: E731
        until_sync(lambda: state() and state()["status"] == "idle", "the widget to mount")
        driver.execute_script(
            "document.querySelector('[data-voiceplatform-widget]').shadowRoot"
            ".querySelector('.vpw-launcher').click()"
        )
        until_sync(lambda: state()["connected"], "the first session", 30)

        platform.process.send_signal(signal.SIGTERM)
        platform.process.wait(DRAIN_SECONDS)
        platform.log.close()
        platform.start()  # the same port, the same database

        until_sync(lambda: state()["reconnects"] >= 1 and state()["connected"], "a reconnect", 30)
        final = state()
        assert final["closeCode"] == 4012
        assert final["errors"] == []
        assert final["serverErrors"] == ["server_restarting"]
        rows = json.loads(
            platform.shell(
                "import json; from tenants.scoping import scopes_disabled; "
                "from agents.models import Session\n"
                "with scopes_disabled(): print(json.dumps(list(Session.objects.order_by('pk')"
                ".values_list('end_reason', flat=True))))"
            ).splitlines()[-1]
        )
        assert rows == ["server_shutdown", ""]  # the first drained, the second live
    finally:
        driver.quit()
        platform.stop()
