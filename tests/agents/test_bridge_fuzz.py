"""Malformed and oversized events from both sides never leave a socket open on a dead session.

Hypothesis drives the relay with sequences of client frames and upstream events: the known
event types with fields of the wrong shape, unknown types, non-JSON, arrays, huge payloads. After
each sequence the relay is in one of two states, never a third: alive (its upstream pump still
running, the client socket open, a new client event still answered) or ended (the client got a
close with a code from the close table). A pump that died while the client socket stays open is
the zombie this test exists to catch.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.realtime.bridge import RealtimeBridge
from agents.realtime.relay.closing import CLOSE_TABLE
from tests.agents.fakes import FakeClient, FakeUpstream
from tests.agents.test_bridge import Clock, ListRecorder, make_policy, settle
from tests.agents.test_tools import ScriptedExecutor

UPSTREAM_TYPES = [
    "session.created", "session.updated", "conversation.item.added", "conversation.item.created",
    "conversation.item.done", "conversation.item.input_audio_transcription.completed",
    "response.created", "response.done", "response.output_item.added",
    "response.output_item.done", "response.output_audio.delta", "input_audio_buffer.committed",
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "error",
    "session.input_transcript.delta", "session.output_transcript.delta", "rate_limits.updated",
    "made.up.type",
]  # fmt: skip
CLIENT_TYPES = [
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
    "conversation.item.create", "response.create", "response.cancel",
    "conversation.item.truncate", "conversation.item.delete", "made.up.type",
]  # fmt: skip
CLOSE_CODES = {row.close_code for row in CLOSE_TABLE.values()}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=20),
    st.sampled_from(["", "inf", "function_call", "message", "r1", "c1", "user", "audio/pcmu"]),
)  # fmt: skip
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "type",
                    "item",
                    "response",
                    "session",
                    "call_id",
                    "name",
                    "content",
                    "usage",
                    "delta",
                    "error",
                    "code",
                    "event_id",
                    "audio",
                    "output",
                    "status",
                    "arguments",
                    "input_tokens",
                    "format",
                ]
            ),
            children,
            max_size=4,
        ),  # fmt: skip
    ),
    max_leaves=12,
)


def event_of(types: list[str]) -> st.SearchStrategy[str]:
    shaped = st.builds(
        lambda kind, fields: json.dumps({**fields, "type": kind}),
        st.sampled_from(types),
        st.dictionaries(
            st.sampled_from(
                [
                    "item",
                    "response",
                    "session",
                    "error",
                    "delta",
                    "item_id",
                    "response_id",
                    "audio",
                    "event_id",
                    "transcript",
                ]
            ),
            values,
            max_size=4,
        ),  # fmt: skip
    )
    junk = st.one_of(
        st.text(max_size=30),
        st.just("[1, 2, 3]"),
        st.just('{"type": 5}'),
        st.just('{"type":"response.output_audio.delta","delta":"' + "A" * 3_000_000 + '"}'),
        st.just(json.dumps({"type": "conversation.item.added", "item": {
            "id": "big", "type": "message", "content": [{"type": "input_audio",
                                                        "audio": "A" * 3_000_000}]}})),
    )  # fmt: skip
    return st.one_of(shaped, shaped, shaped, junk)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("upstream"), event_of(UPSTREAM_TYPES)),
        st.tuples(st.just("client"), event_of(CLIENT_TYPES)),
    ),
    min_size=1,
    max_size=12,
)


async def run_steps(channel: str, sequence: list[tuple[str, str]]) -> None:
    upstream, client, recorder = FakeUpstream(), FakeClient(), ListRecorder()

    async def connect():
        return upstream

    tools = (
        {"name": "c1", "execution": "client", "timeout_seconds": 60},
        {"name": "r1", "execution": "webhook", "webhook_url": "https://t.example/"},
    )
    bridge = RealtimeBridge(
        policy=make_policy(channel=channel, tools=tools), client=client, connect_upstream=connect,
        recorder=recorder, tool_executor=ScriptedExecutor(), clock=Clock(),
        max_frame_chars=1024 * 1024, max_client_message_chars=2 * 1024 * 1024,
    )  # fmt: skip
    assert await bridge.start()
    for side, text in sequence:
        if side == "upstream":
            upstream.push(text)
        else:
            await bridge.from_client(text)
        await settle()
    if bridge.closed.is_set():
        assert client.closed is not None and client.closed[0] in CLOSE_CODES, client.closed
    else:
        # Alive means alive: the pump still runs and a client event is still answered.
        assert not bridge._pump_task.done()
        before = len(client.sent)
        await bridge.from_client("not json")
        assert len(client.sent) == before + 1
        assert json.loads(client.sent[-1])["error"]["code"] == "invalid_json"
        assert client.closed is None
    await bridge.close("client_closed")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(channel=st.sampled_from(["widget", "api", "phone"]), sequence=steps)
async def test_no_sequence_of_bad_events_leaves_a_zombie(channel, sequence):
    await run_steps(channel, sequence)
