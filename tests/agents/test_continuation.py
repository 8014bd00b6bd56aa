"""Conversations that outlive their upstream sessions: the bridge's segments, on fakes."""

import asyncio
import json
from dataclasses import dataclass

from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from agents.realtime.bridge import Continuation, RealtimeBridge
from tests.agents.fakes import FakeClient, FakeUpstream
from tests.agents.test_bridge import CHUNK_20MS, Clock, ListRecorder, make_policy, settle


@dataclass
class Turn:
    role: str
    text: str


@dataclass
class Seed:
    summary: str
    turns: list


def refused(status: int) -> InvalidStatus:
    return InvalidStatus(Response(status, "refused", Headers(), b""))


class Upstreams:
    """Hands out scripted upstreams (or failures) in order; each connect may wait for a gate."""

    def __init__(self, *plan):
        self.plan = list(plan)
        self.opened: list[FakeUpstream] = []
        self.gate: asyncio.Event | None = None

    async def connect(self):
        if self.gate is not None and self.opened:
            await self.gate.wait()
        step = self.plan.pop(0)
        if isinstance(step, Exception):
            raise step
        self.opened.append(step)
        return step


def continuation(**overrides):
    async def seed():
        return Seed(
            summary="User: My name is Alice.\nUser: Order 4821.",
            turns=[Turn("user", "My name is Alice."), Turn("assistant", "Hello Alice.")],
        )

    options = {"seed": seed, "rotate_after_s": None, "backoff_s": 0.01,
               "rate_limited_backoff_s": 0.05, "reconnect_attempts": 3}  # fmt: skip
    options.update(overrides)
    return Continuation(**options)


async def make_bridge(upstreams, *, channel="api", **overrides):
    client, recorder = FakeClient(), ListRecorder()
    bridge = RealtimeBridge(
        policy=make_policy(channel=channel),
        client=client,
        connect_upstream=upstreams.connect,
        recorder=recorder,
        continuation=continuation(**overrides),
        clock=Clock(),
    )
    await bridge.start()
    await settle()
    return bridge, client, recorder


async def until(predicate, timeout=3.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_audio_sent_during_the_swap_arrives_at_the_new_upstream():
    first, second = FakeUpstream("sess_1"), FakeUpstream("sess_2")
    upstreams = Upstreams(first, second)
    upstreams.gate = asyncio.Event()
    bridge, client, recorder = await make_bridge(upstreams)
    frame = json.dumps({"type": "input_audio_buffer.append", "audio": CHUNK_20MS})
    await bridge.from_client(frame)
    first.drop(1006)
    await until(lambda: bridge._swapping)
    for _ in range(3):  # the user keeps talking while the new upstream opens
        await bridge.from_client(frame)
    await bridge.from_client(json.dumps({"type": "input_audio_buffer.commit"}))
    assert first.received_types() == ["session.update", "input_audio_buffer.append"]
    upstreams.gate.set()
    await until(lambda: not bridge._swapping)
    assert second.received_types() == [
        "session.update",
        "conversation.item.create",
        "conversation.item.create",
        "input_audio_buffer.append",
        "input_audio_buffer.append",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
    ]
    update = json.loads(second.received[0])["session"]
    assert "My name is Alice." in update["instructions"]
    assert update["instructions"].startswith("Secret shop prompt")
    seeded = [json.loads(m)["item"] for m in second.received[1:3]]
    assert [(item["id"], item["role"], item["content"][0]["type"]) for item in seeded] == [
        ("vp_seed_1_0", "user", "input_text"),
        ("vp_seed_1_1", "assistant", "output_text"),
    ]
    assert bridge.audio_in_ms == 80
    assert recorder.segments == [
        ("sess_1", "initial", ""),
        ("sess_2", "upstream_drop", "User: My name is Alice.\nUser: Order 4821."),
    ]
    # The client saw one session.created, no error, and nothing of the replayed items.
    second.push({"type": "conversation.item.done", "item": {"id": "vp_seed_1_0"}})
    await settle()
    assert [event["type"] for event in client.events()] == ["session.created"]
    assert not bridge.closed.is_set()
    await bridge.close("client_closed")


async def test_drop_mid_response_then_429_backs_off_and_continues_without_double_usage():
    usage = {"total_tokens": 10, "input_tokens": 6, "output_tokens": 4}
    first, third = FakeUpstream("sess_1"), FakeUpstream("sess_3")
    upstreams = Upstreams(first, refused(429), third)
    bridge, client, recorder = await make_bridge(upstreams)
    first.push({"type": "response.created", "response": {"id": "resp_1"}})
    first.push({"type": "response.done", "response": {"id": "resp_1", "status": "completed",
                                                      "usage": usage}})  # fmt: skip
    first.push({"type": "response.created", "response": {"id": "resp_2"}})
    first.push({"type": "response.output_audio.delta", "response_id": "resp_2", "delta": "AAAA"})
    first.drop(1006)
    await until(lambda: bridge.segment == 1)
    third.push({"type": "response.created", "response": {"id": "resp_3"}})
    third.push({"type": "response.done", "response": {"id": "resp_3", "status": "completed",
                                                      "usage": usage}})  # fmt: skip
    await until(lambda: len(recorder.usages) == 2)
    events = client.events()
    done = [e["response"]["id"] + ":" + e["response"]["status"] for e in events
            if e["type"] == "response.done"]  # fmt: skip
    assert done == ["resp_1:completed", "resp_2:cancelled", "resp_3:completed"]
    error = next(e["error"] for e in events if e["type"] == "error")
    assert error["code"] == "upstream_rate_limited"
    assert "Reconnecting in 0.1 s" in error["message"]
    assert [u.key for u in recorder.usages] == ["resp_1", "resp_3"]
    assert bridge.gaps_ms and not bridge.closed.is_set()
    # The events the platform made up itself parse with the SDK's models.
    from openai.types.realtime import RealtimeServerEvent
    from pydantic import TypeAdapter

    adapter = TypeAdapter(RealtimeServerEvent)
    made_up = [e for e in events if e.get("event_id", "").startswith("event_vp_")]
    assert [e["type"] for e in made_up] == ["response.done", "error"]
    for event in made_up:
        adapter.validate_python(event)
    await bridge.close("client_closed")


async def test_refused_credentials_at_reconnect_are_final():
    first = FakeUpstream("sess_1")
    upstreams = Upstreams(first, refused(401), FakeUpstream("never"))
    bridge, client, _ = await make_bridge(upstreams)
    first.drop(1006)
    await asyncio.wait_for(bridge.wait_closed(), 3)
    assert client.errors() == ["upstream_auth_failed"]
    assert client.closed == (4011, "upstream_auth_failed")
    assert len(upstreams.plan) == 1  # it did not try again


async def test_a_flapping_upstream_ends_the_session_instead_of_looping():
    upstreams = Upstreams(*[FakeUpstream(f"sess_{n}") for n in range(10)])
    bridge, client, _ = await make_bridge(upstreams, reconnect_attempts=2)
    for attempt in range(3):
        await until(lambda attempt=attempt: len(upstreams.opened) == attempt + 1)
        upstreams.opened[-1].drop(1006)
    await asyncio.wait_for(bridge.wait_closed(), 3)
    assert len(upstreams.opened) == 3
    assert client.errors() == ["upstream_closed"]
    assert client.closed == (4011, "upstream_closed")


async def test_rotation_waits_for_a_quiet_moment():
    first, second = FakeUpstream("sess_1"), FakeUpstream("sess_2")
    upstreams = Upstreams(first, second)
    bridge, client, recorder = await make_bridge(upstreams, rotate_after_s=0.05, channel="widget")
    first.push({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0})
    await until(lambda: bridge._pending_rotation == "max_duration")  # the rotation came due
    assert (bridge.segment, bridge._swapping) == (0, False)  # the user is speaking: not now
    first.push({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900})
    first.push({"type": "response.created", "response": {"id": "resp_1"}})
    await until(lambda: "response.created" in [event["type"] for event in client.events()])
    # The agent is answering: not now either.
    assert (bridge.segment, bridge._swapping) == (0, False)
    assert bridge._pending_rotation == "max_duration"
    first.push({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
    await until(lambda: bridge.segment == 1)
    assert [segment[1] for segment in recorder.segments] == ["initial", "max_duration"]
    assert client.events()[-1] == {"type": "vp.session.continued", "reason": "max_duration",
                                   "segment": 1}  # fmt: skip
    await bridge.close("client_closed")


async def test_context_window_threshold_rotates_after_the_response():
    first, second = FakeUpstream("sess_1"), FakeUpstream("sess_2")
    bridge, _, recorder = await make_bridge(Upstreams(first, second), token_threshold=1000)
    first.push({"type": "response.done", "response": {"id": "r", "status": "completed",
                                                      "usage": {"input_tokens": 999}}})  # fmt: skip
    await settle()
    assert bridge.segment == 0
    first.push({"type": "response.done", "response": {"id": "r2", "usage": {"input_tokens": 1000}}})
    await until(lambda: bridge.segment == 1)
    assert recorder.segments[-1][1] == "context_window"
    await bridge.close("client_closed")
