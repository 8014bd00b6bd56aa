"""The local engine over its in-process connection; every server event is validated against
the openai SDK's RealtimeServerEvent models (Client.recv does it)."""

from __future__ import annotations

import base64
import json
import math
import time

import pytest
from websockets.exceptions import ConnectionClosed

from agents.realtime import audio
from agents.realtime.engine import connect_local

pytestmark = pytest.mark.asyncio

LOOKUP_ORDER = {
    "type": "function",
    "name": "lookup_order",
    "description": "Look up an order",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}


def tok(text: str) -> int:
    """Text tokens, as documented: ceil(chars / 4)."""
    return math.ceil(len(text) / 4)


def user_message(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def open_client(client_cls, **kwargs):
    client = client_cls(await connect_local("gpt-realtime-2", **kwargs))
    created = await client.recv()
    assert created["type"] == "session.created"
    assert created["session"]["type"] == "realtime"
    return client, created["session"]


def audio_ms(events: list[dict], fmt: str = "audio/pcm") -> float:
    data = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    return audio.duration_ms(data, fmt)


def usage_of(done: dict) -> dict:
    assert done["type"] == "response.done"
    return done["response"]["usage"]


def assert_usage(usage, *, text_in, audio_in=0, image_in=0, cached=(0, 0, 0), text_out, audio_out):
    details = usage["input_token_details"]
    assert details["text_tokens"] == text_in
    assert details["audio_tokens"] == audio_in
    assert details["image_tokens"] == image_in
    assert usage["input_tokens"] == text_in + audio_in + image_in
    assert details["cached_tokens"] == sum(cached)
    assert details["cached_tokens_details"] == {
        "text_tokens": cached[0],
        "audio_tokens": cached[1],
        "image_tokens": cached[2],
    }
    assert usage["output_token_details"] == {"text_tokens": text_out, "audio_tokens": audio_out}
    assert usage["output_tokens"] == text_out + audio_out
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


async def test_server_vad_turn_end_to_end(client_cls, turn_pcm, utterance_text):
    client, _ = await open_client(client_cls)
    instructions = "Be brief."
    updated = await client.update(
        instructions=instructions,
        audio={"input": {"transcription": {"model": "gpt-4o-transcribe"}}},
    )
    assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    await client.append_audio(turn_pcm)  # 20 ms chunks
    events = await client.until("response.done", timeout=30)
    types = [e["type"] for e in events]

    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    committed = next(e for e in events if e["type"] == "input_audio_buffer.committed")
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert 140 <= started["audio_start_ms"] <= 300  # 500 ms of silence minus 300 ms padding
    assert stopped["audio_end_ms"] > started["audio_start_ms"] + 1500
    completed = next(
        e for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"
    )
    heard = completed["transcript"]  # eSpeak's audio varies a little: a word may be misheard
    assert "status" in heard and "order" in heard
    deltas = "".join(
        e["delta"]
        for e in events
        if e["type"] == "conversation.item.input_audio_transcription.delta"
    )
    assert deltas == heard

    # The response sequence, in order.
    order = [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions)
    # OpenAI's order: the response starts as soon as the turn ends; the input transcript
    # follows it (the answer, which needs the words, waits for it); the first words of the
    # answer's transcript come before its first audio.
    stop = types.index("input_audio_buffer.speech_stopped")
    assert types[stop : stop + 5] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
    ]
    transcribed = types.index("conversation.item.input_audio_transcription.completed")
    assert types.index("response.created") < transcribed < types.index("response.output_item.added")
    first_text = types.index("response.output_audio_transcript.delta")
    assert first_text < types.index("response.output_audio.delta")

    transcript_done = next(
        e for e in events if e["type"] == "response.output_audio_transcript.done"
    )
    expected_answer = f"You said: {heard}."
    assert transcript_done["transcript"] == expected_answer
    transcript_deltas = "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )
    assert transcript_deltas == expected_answer
    audio_deltas = [e for e in events if e["type"] == "response.output_audio.delta"]
    assert len(audio_deltas) > 5
    for delta in audio_deltas[:-1]:
        assert len(base64.b64decode(delta["delta"])) == 4800  # 100 ms at 24 kHz
    out_ms = audio_ms(events)
    assert 1500 < out_ms < 5000

    done = events[-1]
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"][0]["transcript"] == expected_answer
    user_ms = stopped["audio_end_ms"] - started["audio_start_ms"]
    assert_usage(
        usage_of(done),
        text_in=tok(instructions),
        audio_in=math.ceil(user_ms / 100),
        text_out=tok(expected_answer),
        audio_out=math.ceil(out_ms / 50),
    )
    limits = await client.recv()
    total = usage_of(done)["total_tokens"]
    assert limits["rate_limits"] == [
        {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 60.0},
        {"name": "tokens", "limit": 400000, "remaining": 400000 - total, "reset_seconds": 60.0},
    ]
    await client.conn.close()


async def test_manual_commit_pcmu(client_cls, utterance_pcm):
    client, session = await open_client(client_cls)
    await client.update(
        audio={
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
            "output": {"format": {"type": "audio/pcmu"}},
        }
    )
    ulaw = audio.ulaw_encode(audio.resample(utterance_pcm, 24000, 8000))
    await client.append_audio(ulaw, chunk_bytes=160)
    # The engine answers in order: a speech_started/stopped from the appends (turn detection
    # is off) would come before the commit's answer, which must be all that arrives.
    await client.send(type="input_audio_buffer.commit")
    events = await client.until("conversation.item.done")
    assert [e["type"] for e in events] == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
    ]
    await client.send(type="response.create")
    events = await client.until("response.done", timeout=30)
    answer = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    # 8 kHz telephone audio is recognised less well than 24 kHz by the wideband model.
    assert answer["transcript"].startswith("You said: ")
    assert "order" in answer["transcript"]
    out_ms = audio_ms(events, "audio/pcmu")
    assert_usage(
        usage_of(events[-1]),
        text_in=tok(session["instructions"]),
        audio_in=math.ceil(len(ulaw) / 8 / 100),
        text_out=tok(answer["transcript"]),
        audio_out=math.ceil(out_ms / 50),
    )
    assert events[-1]["response"]["audio"]["output"]["format"] == {"type": "audio/pcmu"}


async def test_commit_too_small_and_clear(client_cls):
    client, _ = await open_client(client_cls)
    await client.update(audio={"input": {"turn_detection": None}})
    await client.append_audio(audio.silence(50))
    await client.send(type="input_audio_buffer.commit", event_id="evt_commit")
    error = await client.recv()
    assert error["type"] == "error"
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["event_id"] == "evt_commit"
    await client.send(type="input_audio_buffer.clear")
    assert (await client.recv())["type"] == "input_audio_buffer.cleared"


async def test_protocol_errors_and_session_continues(client_cls):
    client, _ = await open_client(client_cls)
    await client.send_raw("{not json")
    error = await client.recv()
    assert error["error"]["code"] == "invalid_json"

    await client.send(type="conversation.item.explode", event_id="evt_1")
    error = await client.recv()
    assert error["error"]["code"] == "invalid_value"
    assert error["error"]["param"] == "type"
    assert error["error"]["event_id"] == "evt_1"

    await client.send(type="input_audio_buffer.append", audio="!!not base64!!")
    error = await client.recv()
    assert error["error"]["code"] == "invalid_value"
    assert error["error"]["param"] == "audio"

    await client.send(type="session.update", session={"instructions": "x"})
    error = await client.recv()
    assert error["error"]["code"] == "missing_required_parameter"

    await client.send(type="response.cancel")
    error = await client.recv()
    assert error["error"]["code"] == "response_cancel_not_active"

    bad_format = {"type": "realtime", "audio": {"input": {"format": {"type": "audio/wav"}}}}
    await client.send(type="session.update", session=bad_format)
    error = await client.recv()
    assert error["error"]["code"] == "invalid_value"

    await client.update(output_modalities=["text"])
    await client.send(type="conversation.item.create", item=user_message("hello"))
    await client.send(type="response.create")
    await client.send(type="response.create", event_id="evt_2")
    events = await client.until("response.done")
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["error"]["code"] == "conversation_already_has_active_response"
    assert errors[0]["error"]["event_id"] == "evt_2"
    text = next(e for e in events if e["type"] == "response.output_text.done")
    assert text["text"] == "You said: hello."


async def test_text_item_text_response(client_cls):
    client, session = await open_client(client_cls)
    await client.update(output_modalities=["text"], instructions="Answer.")
    await client.send(type="conversation.item.create", item=user_message("hello there"))
    events = await client.until("conversation.item.done")
    assert [e["type"] for e in events] == ["conversation.item.added", "conversation.item.done"]
    assert events[1]["item"]["content"][0]["text"] == "hello there"
    await client.send(type="response.create")
    events = await client.until("response.done")
    assert "response.output_audio.delta" not in [e["type"] for e in events]
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == "You said: hello there."
    assert_usage(
        usage_of(events[-1]),
        text_in=tok("Answer.") + tok("hello there"),
        text_out=tok("You said: hello there."),
        audio_out=0,
    )


async def test_image_item(client_cls):
    client, _ = await open_client(client_cls)
    await client.update(output_modalities=["text"], instructions="Look.")
    image = {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
        ],
    }
    await client.send(type="conversation.item.create", item=image)
    await client.until("conversation.item.done")
    await client.send(type="response.create")
    events = await client.until("response.done")
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == "I see an image."
    assert_usage(
        usage_of(events[-1]), text_in=tok("Look."), image_in=85, text_out=tok(text), audio_out=0
    )


async def test_function_call_round_trip(client_cls):
    client, _ = await open_client(client_cls)
    await client.update(instructions="Help.", tools=[LOOKUP_ORDER], tool_choice="auto")
    said = "please look up order one two three four"
    await client.send(type="conversation.item.create", item=user_message(said))
    await client.until("conversation.item.done")
    await client.send(type="response.create")
    events = await client.until("response.done")
    types = [e["type"] for e in events]
    assert "response.output_audio.delta" not in types
    args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert args_done["name"] == "lookup_order"
    assert json.loads(args_done["arguments"]) == {"order_id": "1234"}
    call = events[-1]["response"]["output"][0]
    assert call["type"] == "function_call" and call["call_id"] == args_done["call_id"]
    assert events[-1]["response"]["status"] == "completed"
    call_tokens = tok("lookup_order" + args_done["arguments"])
    assert_usage(
        usage_of(events[-1]), text_in=tok("Help.") + tok(said), text_out=call_tokens, audio_out=0
    )

    output = json.dumps({"status": "shipped"})
    await client.send(
        type="conversation.item.create",
        item={"type": "function_call_output", "call_id": call["call_id"], "output": output},
    )
    await client.until("conversation.item.done")
    await client.send(type="response.create")
    events = await client.until("response.done", timeout=30)
    answer = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert answer["transcript"] == "The lookup order tool returned: status shipped."
    usage = usage_of(events[-1])
    # input = instructions + user text + function call + its output; cached = the first two
    text_in = tok("Help.") + tok(said) + call_tokens + tok(output)
    assert_usage(
        usage,
        text_in=text_in,
        cached=(tok("Help.") + tok(said), 0, 0),
        text_out=tok(answer["transcript"]),
        audio_out=math.ceil(audio_ms(events) / 50),
    )


async def test_cached_tokens_on_second_response(client_cls):
    client, _ = await open_client(client_cls)
    instructions = "You are the local test agent."
    await client.update(output_modalities=["text"], instructions=instructions)
    await client.send(type="conversation.item.create", item=user_message("first question"))
    await client.send(type="response.create")
    first = await client.until("response.done")
    assert_usage(
        usage_of(first[-1]),
        text_in=tok(instructions) + tok("first question"),
        text_out=tok("You said: first question."),
        audio_out=0,
    )
    await client.send(type="conversation.item.create", item=user_message("second one"))
    await client.send(type="response.create")
    second = await client.until("response.done")
    text_in = (
        tok(instructions)
        + tok("first question")
        + tok("You said: first question.")
        + tok("second one")
    )
    usage = usage_of(second[-1])
    assert_usage(
        usage,
        text_in=text_in,
        cached=(tok(instructions) + tok("first question"), 0, 0),
        text_out=tok("You said: second one."),
        audio_out=0,
    )
    assert usage["input_token_details"]["cached_tokens"] <= usage["input_tokens"]


async def test_cancel_mid_response(client_cls):
    client, session = await open_client(client_cls, realtime_pacing=True)
    said = "tell me a rather long story about the local engine and its many audio frames"
    await client.send(type="conversation.item.create", item=user_message(said))
    await client.until("conversation.item.done")
    await client.send(type="response.create")
    before = await client.until("response.output_audio.delta")
    await client.send(type="response.cancel")
    after = await client.until("response.done")
    events = before + after
    done = events[-1]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    sent_ms = audio_ms(events)
    assert 0 < sent_ms < 1000  # the full answer is several seconds long
    transcript = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    assert_usage(
        usage_of(done),
        text_in=tok(session["instructions"]) + tok(said),
        text_out=tok(transcript["transcript"]),
        audio_out=math.ceil(sent_ms / 50),
    )
    # A new response may start after the cancelled one is done (per-response override: text).
    await client.send(type="response.create", response={"output_modalities": ["text"]})
    events = await client.until("response.done", timeout=30)
    assert events[-1]["response"]["status"] == "completed"
    assert events[-1]["response"]["output_modalities"] == ["text"]


async def test_barge_in_cancels_with_turn_detected(client_cls, turn_pcm, utterance_text):
    client, _ = await open_client(client_cls, realtime_pacing=True)
    said = "tell me a rather long story about the local engine and its many audio frames"
    await client.send(type="conversation.item.create", item=user_message(said))
    await client.send(type="response.create")
    await client.until("response.output_audio.delta")
    await client.append_audio(turn_pcm)
    events = await client.until("response.done")
    assert "input_audio_buffer.speech_started" in [e["type"] for e in events]
    assert events[-1]["response"]["status"] == "cancelled"
    assert events[-1]["response"]["status_details"]["reason"] == "turn_detected"
    # The user's turn is then committed and answered.
    await client.until("response.output_audio_transcript.delta", timeout=30)
    types = [e["type"] for e in client.events]
    assert "input_audio_buffer.committed" in types
    assert types.count("response.created") == 2
    await client.conn.close()


async def test_truncate(client_cls):
    client, session = await open_client(client_cls)
    await client.send(type="conversation.item.create", item=user_message("hi"))
    await client.send(type="response.create")
    events = await client.until("response.done")
    item_id = events[-1]["response"]["output"][0]["id"]
    full_ms = audio_ms(events)
    assert (await client.recv())["type"] == "rate_limits.updated"

    await client.send(
        type="conversation.item.truncate", item_id="item_nope", content_index=0, audio_end_ms=10
    )
    assert (await client.recv())["error"]["code"] == "item_not_found"
    await client.send(
        type="conversation.item.truncate",
        item_id=item_id,
        content_index=0,
        audio_end_ms=int(full_ms) + 500,
    )
    assert (await client.recv())["error"]["code"] == "invalid_value"

    await client.send(
        type="conversation.item.truncate", item_id=item_id, content_index=0, audio_end_ms=300
    )
    truncated = await client.recv()
    assert truncated["type"] == "conversation.item.truncated"
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item_id, 300)

    # The truncated item now counts 300 ms of assistant audio (6 tokens) and no transcript.
    await client.update(output_modalities=["text"])
    await client.send(type="response.create")
    events = await client.until("response.done")
    assert_usage(
        usage_of(events[-1]),
        text_in=tok(session["instructions"]) + tok("hi"),
        audio_in=6,
        cached=(tok(session["instructions"]) + tok("hi"), 0, 0),
        text_out=tok("You said: hi."),
        audio_out=0,
    )


async def test_session_expired_closes_1001(client_cls):
    client, _ = await open_client(client_cls, max_session_seconds=0.3)
    error = await client.recv(timeout=5)
    assert error["type"] == "error"
    assert error["error"]["code"] == "session_expired"
    with pytest.raises(ConnectionClosed) as info:
        await client.conn.recv()
    assert info.value.rcvd.code == 1001
    assert client.conn.close_code == 1001
    with pytest.raises(ConnectionClosed):
        await client.conn.send(json.dumps({"type": "response.create"}))


async def test_transcription_session(client_cls, turn_pcm, utterance_text):
    client = client_cls(await connect_local("gpt-realtime-2", intent="transcription"))
    created = await client.recv()
    assert created["session"]["type"] == "transcription"
    # OpenAI's transcription session.update, as Pipecat and LiveKit send it.
    audio_input = {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "gpt-realtime-whisper", "language": "en", "prompt": "orders"},
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        },
        "noise_reduction": {"type": "near_field"},
    }
    await client.send(
        type="session.update", session={"type": "transcription", "audio": {"input": audio_input}}
    )
    updated = (await client.until("session.updated"))[-1]["session"]
    assert updated["type"] == "transcription"
    assert updated["audio"]["input"] == {
        **audio_input,
        "turn_detection": {**created["session"]["audio"]["input"]["turn_detection"]},
    }
    await client.append_audio(turn_pcm)
    events = await client.until("conversation.item.input_audio_transcription.completed")
    completed = events[-1]
    assert "status" in completed["transcript"] and "order" in completed["transcript"]
    stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    seconds = (stopped["audio_end_ms"] - started["audio_start_ms"]) / 1000
    assert completed["usage"] == {"type": "duration", "seconds": round(seconds, 3)}
    await client.send(type="response.create")
    error = await client.recv()
    assert error["type"] == "error"
    # A clear answered after the refusal shows that no response.* followed it.
    await client.send(type="input_audio_buffer.clear")
    assert [e["type"] for e in await client.until("input_audio_buffer.cleared")] == [
        "input_audio_buffer.cleared"
    ]


async def test_client_close_ends_session(client_cls):
    client, _ = await open_client(client_cls)
    await client.conn.close()
    assert client.conn.close_code == 1000
    with pytest.raises(ConnectionClosed):
        await client.conn.recv()


async def test_max_output_tokens_gives_incomplete(client_cls):
    client, _ = await open_client(client_cls)
    await client.update(output_modalities=["text"], instructions="Hi.")
    await client.send(type="conversation.item.create", item=user_message("count to ten"))
    await client.send(type="response.create", response={"max_output_tokens": 3})
    events = await client.until("response.done")
    done = events[-1]["response"]
    assert done["status"] == "incomplete"
    assert done["status_details"]["reason"] == "max_output_tokens"
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == "You said:"  # 9 chars = 3 tokens; one more word would exceed
    assert_usage(done["usage"], text_in=tok("Hi.") + tok("count to ten"), text_out=3, audio_out=0)


async def test_audio_item_create_retrieve_delete_and_mcp_tool(client_cls, utterance_pcm):
    client, _ = await open_client(client_cls)
    mcp = {"type": "mcp", "server_label": "crm", "server_url": "https://mcp.example.com/sse"}
    updated = await client.update(
        output_modalities=["text"], instructions="Hi.", tools=[LOOKUP_ORDER, mcp]
    )
    assert updated["session"]["tools"][1]["type"] == "mcp"
    # Adding the MCP server lists its tools (none known: no allowed_tools, no network).
    listed = (await client.until("conversation.item.done"))[-1]["item"]
    assert (listed["type"], listed["server_label"]) == ("mcp_list_tools", "crm")
    assert listed["tools"] == []
    item = {
        "id": "item_audio1",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_audio", "audio": base64.b64encode(utterance_pcm).decode()}],
    }
    await client.send(type="conversation.item.create", item=item)
    done = (await client.until("conversation.item.done"))[-1]
    assert "audio" not in done["item"]["content"][0]  # audio bytes are not echoed back
    await client.send(type="conversation.item.retrieve", item_id="item_audio1")
    assert (await client.recv())["type"] == "conversation.item.retrieved"
    await client.send(type="response.create")
    events = await client.until("response.done")
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == "You said: what is the status of my order."
    ms = audio.duration_ms(utterance_pcm)
    assert_usage(
        usage_of(events[-1]),
        text_in=tok("Hi."),
        audio_in=math.ceil(ms / 100),
        text_out=tok(text),
        audio_out=0,
    )
    assert (await client.recv())["type"] == "rate_limits.updated"
    await client.send(type="conversation.item.delete", item_id="item_audio1")
    deleted = await client.recv()
    assert deleted == {**deleted, "type": "conversation.item.deleted", "item_id": "item_audio1"}
    await client.send(type="conversation.item.delete", item_id="item_audio1")
    assert (await client.recv())["error"]["code"] == "item_not_found"


async def test_rate_limits_updated_after_each_response(client_cls):
    client, _ = await open_client(client_cls)
    await client.update(output_modalities=["text"], instructions="Hi.")
    totals = []
    for said in ("one", "two"):
        await client.send(type="conversation.item.create", item=user_message(said))
        await client.send(type="response.create")
        totals.append(usage_of((await client.until("response.done"))[-1])["total_tokens"])
        limits = await client.recv()
        assert limits["type"] == "rate_limits.updated"
    requests, tokens = limits["rate_limits"]
    assert (requests["name"], requests["limit"], requests["remaining"]) == ("requests", 5000, 4998)
    assert (tokens["name"], tokens["limit"]) == ("tokens", 400000)
    assert tokens["remaining"] == 400000 - sum(totals)
    assert 59.0 < requests["reset_seconds"] <= 60.0  # the window began with the first response
    assert tokens["reset_seconds"] == requests["reset_seconds"]


async def test_previous_item_id_is_null_or_a_real_item(client_cls):
    client, _ = await open_client(client_cls)
    await client.update(output_modalities=["text"])
    await client.send(type="conversation.item.create", item={**user_message("a"), "id": "item_a"})
    first = await client.until("conversation.item.done")
    assert [e["previous_item_id"] for e in first] == [None, None]
    # "root" inserts at the start: the item has no item before it.
    await client.send(
        type="conversation.item.create",
        previous_item_id="root",
        item={**user_message("b"), "id": "item_b"},
    )
    root = await client.until("conversation.item.done")
    assert [e["previous_item_id"] for e in root] == [None, None]
    await client.send(type="conversation.item.create", item={**user_message("c"), "id": "item_c"})
    last = await client.until("conversation.item.done")
    assert [e["previous_item_id"] for e in last] == ["item_a", "item_a"]  # order: b, a, c
    await client.send(type="response.create")
    events = await client.until("response.done")
    added = next(e for e in events if e["type"] == "conversation.item.added")
    assert added["previous_item_id"] == "item_c"
    answer = next(e for e in events if e["type"] == "conversation.item.done")
    assert answer["previous_item_id"] == "item_c"


async def test_paced_audio_is_sent_no_faster_than_real_time(client_cls):
    client, _ = await open_client(client_cls, realtime_pacing=True)
    await client.send(type="conversation.item.create", item=user_message("hi"))
    await client.send(type="response.create")
    await client.until("response.output_audio.delta")
    started = time.monotonic()
    events = await client.until("response.output_audio.done")
    elapsed_ms = (time.monotonic() - started) * 1000
    first_chunk_ms = 100  # each delta is sent, then its end is waited for
    sent_ms = audio_ms([*client.events])
    assert sent_ms > 1000  # "You said: hi." is over a second of speech
    # Every delta after the first waits for the audio before it to be due.
    assert elapsed_ms >= sent_ms - 2 * first_chunk_ms
    assert len([e for e in events if e["type"] == "response.output_audio.delta"]) >= 10


async def test_barge_in_on_paced_audio_then_truncate(client_cls, turn_pcm):
    """What a client does when the user interrupts: the engine cancels the answer mid-way,
    the client truncates the item at what it played."""
    client, _ = await open_client(client_cls, realtime_pacing=True)
    await client.update(audio={"input": {"turn_detection": None}})
    said = "tell me a rather long story about the local engine and its many audio frames"
    await client.send(type="conversation.item.create", item=user_message(said))
    await client.send(type="response.create")
    await client.until("response.output_audio.delta")
    await client.until("response.output_audio.delta")
    await client.send(type="response.cancel")
    events = await client.until("response.done")
    done = events[-1]["response"]
    assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "client_cancelled")
    item = done["output"][0]
    assert item["status"] == "incomplete"
    sent_ms = audio_ms(client.events)
    assert 200 <= sent_ms < 1500  # paced: the answer is several seconds long
    played_ms = 150
    await client.send(
        type="conversation.item.truncate",
        item_id=item["id"],
        content_index=0,
        audio_end_ms=played_ms,
    )
    truncated = (await client.until("conversation.item.truncated"))[-1]
    assert (truncated["item_id"], truncated["audio_end_ms"]) == (item["id"], played_ms)
