"""An unauthenticated ``/twilio/stream/`` socket is closed within 5 s, on real servers."""

import asyncio
import json
import time

import pytest
import websockets

from tests.servers import SERVERS, Platform, base_environ


@pytest.fixture(scope="module", params=SERVERS)
def platform(request, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp(f"stream-idle-{request.param}")
    server = Platform(base_environ(tmp_path), tmp_path, server=request.param)
    yield server
    server.stop()


async def test_a_socket_that_never_sends_start_is_closed_within_five_seconds(platform):
    started = time.monotonic()
    async with websockets.connect(f"{platform.ws_url}/twilio/stream/") as connection:
        # Twilio's first message; it does not authenticate anything.
        await connection.send(json.dumps({"event": "connected", "protocol": "Call"}))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(connection.recv(), 10)
    elapsed = time.monotonic() - started
    assert (connection.close_code, connection.close_reason) == (4401, "start_timeout")
    assert 4.5 <= elapsed <= 6.5, elapsed
