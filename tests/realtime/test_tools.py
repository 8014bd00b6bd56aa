"""Parallel function calls and the remote-MCP imitation of the local engine; every server event
is validated against the openai SDK's RealtimeServerEvent models (Client.recv does it)."""

from __future__ import annotations

import json
import math

import pytest

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
CHECK_WEATHER = {
    "type": "function",
    "name": "check_weather",
    "description": "Check the weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
DOCS_MCP = {
    "type": "mcp",
    "server_label": "docs",
    "server_url": "https://mcp.example.com/mcp",
    "allowed_tools": ["search_docs", "get_page"],
    "authorization": "secret-token",
    "require_approval": "never",
}
CALL_EVENTS = [
    "response.output_item.added",
    "conversation.item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "conversation.item.done",
    "response.output_item.done",
]
MCP_CALL_EVENTS = [
    "response.output_item.added",
    "conversation.item.added",
    "response.mcp_call_arguments.delta",
    "response.mcp_call_arguments.done",
    "response.mcp_call.in_progress",
    "response.mcp_call.completed",
    "conversation.item.done",
    "response.output_item.done",
]
TEXT_MESSAGE_EVENTS = [
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
]


def tok(text: str) -> int:
    return math.ceil(len(text) / 4)


def user_message(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def squeeze(types: list[str]) -> list[str]:
    """Collapse runs of text deltas (their number depends on the text)."""
    out: list[str] = []
    for t in types:
        if not (t == "response.output_text.delta" and out and out[-1] == t):
            out.append(t)
    return out


async def open_client(client_cls, **session):
    client = client_cls(await connect_local("gpt-realtime-2"))
    assert (await client.recv())["type"] == "session.created"
    if session:
        await client.update(**session)
    return client


async def say_and_respond(client, said: str, **response) -> list[dict]:
    await client.send(type="conversation.item.create", item=user_message(said))
    await client.until("conversation.item.done")
    if response:
        await client.send(type="response.create", response=response)
    else:
        await client.send(type="response.create")
    return await client.until("response.done", timeout=30)


async def send_output(client, call_id: str, output: str) -> None:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    await client.send(type="conversation.item.create", item=item)
    await client.until("conversation.item.done")


async def test_parallel_function_calls_round_trip(client_cls):
    client = await open_client(
        client_cls, instructions="Help.", tools=[LOOKUP_ORDER, CHECK_WEATHER], tool_choice="auto"
    )
    said = "lookup order one two three and check weather"
    events = await say_and_respond(client, said)
    assert [e["type"] for e in events] == ["response.created", *CALL_EVENTS, *CALL_EVENTS] + [
        "response.done"
    ]
    done = events[-1]["response"]
    assert done["status"] == "completed"
    calls = done["output"]
    assert [(c["type"], c["name"], c["status"]) for c in calls] == [
        ("function_call", "lookup_order", "completed"),
        ("function_call", "check_weather", "completed"),
    ]
    assert json.loads(calls[0]["arguments"]) == {"order_id": "123"}
    assert json.loads(calls[1]["arguments"]) == {}
    assert calls[0]["call_id"] != calls[1]["call_id"]
    args_done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["call_id"], e["output_index"]) for e in args_done] == [
        (calls[0]["call_id"], 0),
        (calls[1]["call_id"], 1),
    ]
    call_tokens = tok("lookup_order" + calls[0]["arguments"]) + tok(
        "check_weather" + calls[1]["arguments"]
    )
    usage = done["usage"]
    assert usage["output_token_details"] == {"text_tokens": call_tokens, "audio_tokens": 0}
    assert usage["input_tokens"] == tok("Help.") + tok(said)

    out1 = json.dumps({"status": "shipped"})
    out2 = json.dumps({"forecast": "sunny"})
    await send_output(client, calls[0]["call_id"], out1)
    await send_output(client, calls[1]["call_id"], out2)
    await client.send(type="response.create")
    events = await client.until("response.done", timeout=30)
    answer = next(e for e in events if e["type"] == "response.output_audio_transcript.done")
    expected = "The lookup order tool returned: status shipped. The check weather tool returned: "
    expected += "forecast sunny."
    assert answer["transcript"] == expected
    usage = events[-1]["response"]["usage"]
    text_in = tok("Help.") + tok(said) + call_tokens + tok(out1) + tok(out2)
    assert usage["input_token_details"]["text_tokens"] == text_in
    # cached = the previous response's input (instructions + user text), as documented
    assert usage["input_token_details"]["cached_tokens"] == tok("Help.") + tok(said)
    await client.conn.close()


async def test_parallel_calls_partial_outputs_and_errors(client_cls):
    client = await open_client(
        client_cls, output_modalities=["text"], tools=[LOOKUP_ORDER, CHECK_WEATHER]
    )
    events = await say_and_respond(client, "please check weather and look up order four two")
    calls = events[-1]["response"]["output"]
    assert [c["name"] for c in calls] == ["check_weather", "lookup_order"]
    assert json.loads(calls[1]["arguments"]) == {"order_id": "42"}

    # Only one output, an error: answer with it, no crash.
    await send_output(client, calls[1]["call_id"], json.dumps({"error": "Order not found."}))
    await client.send(type="response.create")
    events = await client.until("response.done")
    assert squeeze([e["type"] for e in events]) == [
        "response.created",
        *TEXT_MESSAGE_EVENTS,
        "response.done",
    ]
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == "The lookup order tool failed: Order not found."
    assert events[-1]["response"]["status"] == "completed"


async def test_parallel_outputs_in_any_order_error_object(client_cls):
    client = await open_client(
        client_cls, output_modalities=["text"], tools=[LOOKUP_ORDER, CHECK_WEATHER]
    )
    events = await say_and_respond(client, "lookup order one and check weather")
    first, second = events[-1]["response"]["output"]
    error = {"error": {"message": "weather service down", "code": 503}}
    await send_output(client, second["call_id"], json.dumps(error))
    await send_output(client, first["call_id"], "delivered")
    await client.send(type="response.create")
    events = await client.until("response.done")
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == (
        "The lookup order tool returned: delivered. "
        "The check weather tool failed: weather service down."
    )


async def test_tool_choice_none_and_single_call_unchanged(client_cls):
    client = await open_client(
        client_cls, output_modalities=["text"], tools=[LOOKUP_ORDER, CHECK_WEATHER]
    )
    events = await say_and_respond(client, "check weather please", tool_choice="none")
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == "You said: check weather please."
    events = await say_and_respond(client, "check weather please")
    assert [c["name"] for c in events[-1]["response"]["output"]] == ["check_weather"]


async def test_mcp_list_tools_on_session_update(client_cls):
    client = await open_client(client_cls)
    await client.send(
        type="session.update", session={"type": "realtime", "tools": [LOOKUP_ORDER, DOCS_MCP]}
    )
    events = await client.until("conversation.item.done")
    assert [e["type"] for e in events] == [
        "session.updated",
        "conversation.item.added",
        "mcp_list_tools.in_progress",
        "mcp_list_tools.completed",
        "conversation.item.done",
    ]
    tool = events[0]["session"]["tools"][1]
    assert tool["server_label"] == "docs" and "authorization" not in tool
    item = events[-1]["item"]
    assert item["type"] == "mcp_list_tools" and item["server_label"] == "docs"
    assert item["tools"] == [
        {"name": "search_docs", "input_schema": {"type": "object"}},
        {"name": "get_page", "input_schema": {"type": "object"}},
    ]
    assert events[1]["item"]["id"] == events[2]["item_id"] == events[3]["item_id"] == item["id"]
    await client.send(type="conversation.item.retrieve", item_id=item["id"])
    assert (await client.recv())["item"]["type"] == "mcp_list_tools"

    # The same tools again: nothing to list. A changed allowed_tools: listed again.
    await client.update(instructions="Again.", tools=[LOOKUP_ORDER, DOCS_MCP])
    await client.update(tools=[{**DOCS_MCP, "allowed_tools": {"tool_names": ["get_page"]}}])
    done = (await client.until("conversation.item.done"))[-1]
    assert done["item"]["tools"] == [{"name": "get_page", "input_schema": {"type": "object"}}]
    assert [e["type"] for e in client.events].count("mcp_list_tools.completed") == 2


@pytest.mark.parametrize("modality", ["text", "audio"])
async def test_mcp_call_and_spoken_result(client_cls, modality):
    client = await open_client(client_cls, output_modalities=[modality], instructions="Hi.")
    await client.send(type="session.update", session={"type": "realtime", "tools": [DOCS_MCP]})
    await client.until("conversation.item.done")
    said = "please search docs for order nine"
    events = await say_and_respond(client, said)
    types = squeeze([e["type"] for e in events])
    if modality == "text":
        assert types == [
            "response.created",
            *MCP_CALL_EVENTS,
            *TEXT_MESSAGE_EVENTS,
            "response.done",
        ]
    else:
        assert types[: len(MCP_CALL_EVENTS) + 1] == ["response.created", *MCP_CALL_EVENTS]
        assert types[-3:] == [
            "conversation.item.done",
            "response.output_item.done",
            "response.done",
        ]
    done = events[-1]["response"]
    assert done["status"] == "completed"
    call, message = done["output"]
    placeholder = "[local engine: MCP server docs not contacted] search_docs called with query 9"
    assert call == {
        "id": call["id"],
        "type": "mcp_call",
        "server_label": "docs",
        "name": "search_docs",
        "arguments": '{"query": "9"}',
        "approval_request_id": None,
        "error": None,
        "output": placeholder,
    }
    args_done = next(e for e in events if e["type"] == "response.mcp_call_arguments.done")
    assert (args_done["item_id"], args_done["output_index"]) == (call["id"], 0)
    completed = next(e for e in events if e["type"] == "response.mcp_call.completed")
    assert (completed["item_id"], completed["output_index"]) == (call["id"], 0)
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert added[0]["item"]["output"] is None and added[0]["item"]["arguments"] == ""
    answer = f"The search docs tool on docs returned: {placeholder}."
    part = message["content"][0]
    assert part.get("text", part.get("transcript")) == answer
    usage = done["usage"]
    call_tokens = tok("search_docs" + call["arguments"] + placeholder)
    assert usage["input_tokens"] == tok("Hi.") + tok(said)  # mcp_list_tools items count 0
    if modality == "text":
        assert usage["output_token_details"] == {
            "text_tokens": call_tokens + tok(answer),
            "audio_tokens": 0,
        }
    else:
        assert usage["output_token_details"]["text_tokens"] == call_tokens + tok(answer)
        assert usage["output_token_details"]["audio_tokens"] > 0

    # The mcp_call counts as input of the next response like a function call.
    events = await say_and_respond(client, "thanks", output_modalities=["text"])
    text_in = events[-1]["response"]["usage"]["input_token_details"]["text_tokens"]
    assert text_in == tok("Hi.") + tok(said) + call_tokens + tok(answer) + tok("thanks")


async def test_function_and_mcp_in_one_turn(client_cls):
    client = await open_client(client_cls, output_modalities=["text"])
    await client.send(
        type="session.update", session={"type": "realtime", "tools": [LOOKUP_ORDER, DOCS_MCP]}
    )
    await client.until("conversation.item.done")
    events = await say_and_respond(client, "get page five then lookup order seven")
    types = [e["type"] for e in events]
    assert types == ["response.created", *MCP_CALL_EVENTS, *CALL_EVENTS, "response.done"]
    mcp_call, function_call = events[-1]["response"]["output"]
    assert (mcp_call["name"], mcp_call["arguments"]) == ("get_page", '{"query": "5"}')
    assert json.loads(function_call["arguments"]) == {"order_id": "7"}
    await send_output(client, function_call["call_id"], "on its way")
    await client.send(type="response.create")
    events = await client.until("response.done")
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == (
        "The get page tool on docs returned: [local engine: MCP server docs not contacted] "
        "get_page called with query 5. The lookup order tool returned: on its way."
    )


async def test_mcp_tool_choice_and_response_level_tools(client_cls):
    client = await open_client(client_cls, output_modalities=["text"])
    mcp = {k: v for k, v in DOCS_MCP.items() if k != "authorization"}
    events = await say_and_respond(
        client,
        "hello",
        tools=[mcp],
        tool_choice={"type": "mcp", "server_label": "docs", "name": "get_page"},
    )
    call = events[-1]["response"]["output"][0]
    assert (call["type"], call["name"], call["arguments"]) == ("mcp_call", "get_page", "{}")
    # Not named and not forced: a plain answer.
    events = await say_and_respond(client, "hello again", tools=[mcp])
    text = next(e for e in events if e["type"] == "response.output_text.done")["text"]
    assert text == "You said: hello again."
