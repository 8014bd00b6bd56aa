"""A scripted OpenAI Realtime upstream for tests against real server processes.

``ScriptedUpstream`` is a websockets server in a thread of the test process; the platform's
agents with provider "openai" talk to it once the server runs with ``upstream.environ``
(``VP_OPENAI_REALTIME_URL`` points here). ``mode`` picks what the next connection does.
``AGENT_SETUP`` (through ``scripted_agent_create``) adds such an agent to the demo tenant and
an API key for it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading

import websockets
from websockets.datastructures import Headers
from websockets.http11 import Response

AUDIO_DELTA = base64.b64encode(b"\x00\x01" * 2400).decode()  # 100 ms of PCM16 24 kHz
USAGE = {"total_tokens": 300, "input_tokens": 100, "output_tokens": 200,
         "input_token_details": {"text_tokens": 100, "audio_tokens": 0},
         "output_token_details": {"text_tokens": 0, "audio_tokens": 200}}  # fmt: skip
REFUSALS = {"refuse401": 401, "refuse429": 429, "refuse503": 503}


class ScriptedUpstream:
    """An OpenAI Realtime stand-in in its own thread; ``mode`` picks the next behaviour.

    Every connection gets ``session.created``, and ``session.updated`` for the platform's first
    ``session.update``; then ``_<mode>`` runs (``refuse…`` modes refuse the handshake). ``sent``
    holds the usage of every ``response.done`` sent, by response id: the upstream's side of the
    ledger.
    """

    def __init__(self, mode: str = "normal") -> None:
        self.mode = mode
        self.connections = 0
        self.sent: dict[str, dict] = {}
        # Every event the platform sent, per connection (1-based), in order: the session.update
        # it configured the session with, its own response.create, the client's events.
        self.received: dict[int, list[dict]] = {}
        self.farewell_tool = "end_call"  # what the ``goodbye`` mode calls after speaking
        self.hung_up = threading.Event()  # set when a connection ends, from either side
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    @property
    def environ(self) -> dict[str, str]:
        """The settings that point the platform's "openai" agents here."""
        return {
            "OPENAI_API_KEY": "sk-scripted-" + "x" * 30,
            "VP_OPENAI_REALTIME_URL": f"ws://127.0.0.1:{self.port}/v1/realtime",
        }

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def main():
            self.server = await websockets.serve(
                self._handler, "127.0.0.1", 0, process_request=self._refuse, max_size=None
            )
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()
            await self.server.serve_forever()

        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(main())

    def _refuse(self, connection, request):
        status = REFUSALS.get(self.mode)
        if status:
            return Response(status, "refused", Headers(), b"no\n")
        return None

    async def _handler(self, connection) -> None:
        self.connections += 1
        mode = self.mode
        session = {"id": f"sess_up_{self.connections}", "object": "realtime.session",
                   "type": "realtime", "model": "gpt-realtime-2"}  # fmt: skip
        try:
            await connection.send(json.dumps({"type": "session.created", "session": session}))
            update = json.loads(await connection.recv())
            self.received[self.connections] = [update]
            await connection.send(
                json.dumps({"type": "session.updated", "session": {**update["session"], **session}})
            )
            await getattr(self, f"_{mode}")(connection)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.hung_up.set()

    async def _respond(
        self,
        connection,
        response_id: str,
        *,
        deltas: int = 1,
        pause: float = 0.0,
        usage: dict | None = None,
    ) -> None:
        """``response.created``, ``deltas`` audio deltas (``pause`` s before each), then
        ``response.done`` with ``usage`` (``USAGE`` by default), recorded in ``sent``."""
        usage = USAGE if usage is None else usage
        response = {"id": response_id, "object": "realtime.response", "status": "in_progress",
                    "output": []}  # fmt: skip
        await connection.send(json.dumps({"type": "response.created", "response": response}))
        for _ in range(deltas):
            if pause:
                await asyncio.sleep(pause)
            await connection.send(json.dumps({
                "type": "response.output_audio.delta", "event_id": "e", "response_id": response_id,
                "item_id": "item_a", "output_index": 0, "content_index": 0,
                "delta": AUDIO_DELTA}))  # fmt: skip
        done = {**response, "status": "completed", "usage": usage}
        self.sent[response_id] = usage  # before the platform can have it
        await connection.send(json.dumps({"type": "response.done", "response": done}))

    async def _normal(self, connection) -> None:
        number, received = 0, self.received[self.connections]
        async for message in connection:
            received.append(json.loads(message))
            if received[-1].get("type") == "response.create":
                number += 1
                await self._respond(connection, f"resp_{self.connections}_{number}")

    async def _goodbye(self, connection) -> None:
        """Each response says a little audio, then calls ``farewell_tool`` (end_call)."""
        received = self.received[self.connections]
        async for message in connection:
            received.append(json.loads(message))
            if received[-1].get("type") != "response.create":
                continue
            response_id = f"resp_bye_{self.connections}"
            response = {"id": response_id, "object": "realtime.response",
                        "status": "in_progress", "output": []}  # fmt: skip
            await connection.send(json.dumps({"type": "response.created", "response": response}))
            message_item = {"id": "item_bye", "type": "message", "role": "assistant",
                            "content": []}  # fmt: skip
            await connection.send(json.dumps({"type": "response.output_item.added",
                                              "response_id": response_id, "output_index": 0,
                                              "item": message_item}))  # fmt: skip
            for _ in range(5):  # 500 ms of audio
                await connection.send(json.dumps({
                    "type": "response.output_audio.delta", "response_id": response_id,
                    "item_id": "item_bye", "output_index": 0, "content_index": 0,
                    "delta": AUDIO_DELTA}))  # fmt: skip
            call = {"id": "item_call", "type": "function_call", "call_id": "call_bye",
                    "name": self.farewell_tool, "arguments": "{}",
                    "status": "completed"}  # fmt: skip
            await connection.send(json.dumps({"type": "response.output_item.done",
                                              "response_id": response_id, "output_index": 1,
                                              "item": call}))  # fmt: skip
            done = {**response, "status": "completed", "usage": USAGE}
            self.sent[response_id] = USAGE
            await connection.send(json.dumps({"type": "response.done", "response": done}))

    async def _huge(self, connection) -> None:
        """A 3.5 MB conversation item carrying audio, as OpenAI sends, then a normal answer."""
        await connection.recv()
        item = {"id": "item_big", "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "audio": "A" * 3_500_000,
                             "transcript": "hello"}]}  # fmt: skip
        await connection.send(json.dumps({"type": "conversation.item.added", "event_id": "e",
                                          "previous_item_id": None, "item": item}))  # fmt: skip
        await self._respond(connection, "resp_after_big")
        await connection.wait_closed()

    async def _drop(self, connection) -> None:
        await connection.recv()  # the client's first event
        connection.transport.abort()  # no close frame: a dropped connection

    async def _expire(self, connection) -> None:
        await connection.recv()
        await connection.send(json.dumps({"type": "error", "error": {
            "type": "invalid_request_error", "code": "session_expired",
            "message": "Your session hit the maximum duration of 60 minutes."}}))  # fmt: skip
        await connection.close(1001, "session expired")

    async def _stream(self, connection) -> None:
        """Streams audio as fast as the socket takes it (a long answer), for slow readers."""
        await connection.recv()
        response = {"id": "resp_stream", "object": "realtime.response", "status": "in_progress",
                    "output": []}  # fmt: skip
        await connection.send(json.dumps({"type": "response.created", "response": response}))
        frame = json.dumps(
            {
                "type": "response.output_audio.delta",
                "event_id": "e",
                "response_id": "resp_stream",
                "item_id": "item_a",
                "output_index": 0,
                "content_index": 0,
                "delta": AUDIO_DELTA,
            }
        )
        for _ in range(20_000):  # 2,000 s of audio at most; the platform closes long before
            await connection.send(frame)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.thread.join(5)


AGENT_SETUP = r"""
import json
from agents.configuration import agent_create
from tenants import services
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

with scopes_disabled():
    tenant = Tenant.objects.get(slug="demo")
    if {max_concurrent_sessions!r} is not None:
        tenant.max_concurrent_sessions = {max_concurrent_sessions!r}
        tenant.save(update_fields=["max_concurrent_sessions"])
with tenant_scope(tenant):
    agent = agent_create(tenant=tenant, actor=None, fields={{
        "name": "Scripted", "kind": "voice_agent", "provider": "openai",
        "model": "gpt-realtime-2", "voice": "marin", "turn_detection": "none"}})
    _, raw_key = services.api_key_issue(tenant=tenant, name="scripted", default_agent=agent)
print(json.dumps({{"api_key": raw_key, "agent_id": agent.pk}}))
"""


def scripted_agent_create(platform, *, max_concurrent_sessions: int | None = None) -> dict:
    """An "openai" agent of the demo tenant and an API key that defaults to it:
    ``{"api_key": …, "agent_id": …}``. ``max_concurrent_sessions`` also sets the tenant's."""
    code = AGENT_SETUP.format(max_concurrent_sessions=max_concurrent_sessions)
    return json.loads(platform.shell(code).splitlines()[-1])
