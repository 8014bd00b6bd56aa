"""Function tools: the signed webhook executor, and the bridge's call handling on fakes."""

import asyncio
import hashlib
import hmac
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from agents.realtime.bridge import RealtimeBridge
from agents.realtime.outbound import TenantLimiter
from agents.realtime.tools import ToolResult, WebhookExecutor
from tests.agents.fakes import FakeClient, FakeUpstream
from tests.agents.test_bridge import Clock, ListRecorder, make_policy, settle
from tests.waiting import until

SECRET = "whsec_test_secret"


class ToolServer:
    """A tenant's webhook: records requests; answers by path (/ok, /slow, /fail, /big, /text)."""

    def __init__(self):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((self.path, self.headers, body))
                if self.path == "/slow":
                    time.sleep(1.0)
                if self.path == "/redirect":  # a public-looking hook sending us inside
                    self.send_response(302)
                    self.send_header("Location", outer.url + "/internal")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path == "/fail":
                    self.send_response(500)
                    self.end_headers()
                    return
                payload = {
                    "/big": b"x" * 70000,
                    "/text": b"shipped yesterday",
                }.get(self.path, json.dumps({"status": "shipped", "eta": "Friday"}).encode())
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def tool_server():
    server = ToolServer()
    yield server
    server.close()


def executor(**overrides):
    options = {"signing_secret": SECRET, "session_id": 7, "agent_id": 3,
               "allow_private_addresses": True}  # fmt: skip
    options.update(overrides)
    return WebhookExecutor(**options)


def tool(url, name="lookup_order", timeout=5):
    return {"name": name, "execution": "webhook", "webhook_url": url, "timeout_seconds": timeout,
            "parameters": {"type": "object", "properties": {}}}  # fmt: skip


async def test_webhook_call_is_signed_and_returns_the_answer(tool_server, monkeypatch):
    # The latency is the call's own span on the monotonic clock, in whole milliseconds.
    ticks = iter([100.0, 100.25])
    monkeypatch.setattr(
        "agents.realtime.tools.time", SimpleNamespace(monotonic=lambda: next(ticks), time=time.time)
    )
    result = await executor().call(
        tool(tool_server.url + "/ok"), call_id="call_1", arguments='{"order_number": "123"}'
    )
    assert json.loads(result.output) == {"status": "shipped", "eta": "Friday"}
    assert (result.error, result.latency_ms) == ("", 250)
    path, headers, body = tool_server.requests[0]
    sent = json.loads(body)
    nonce = sent.pop("nonce")
    assert sent == {"tool": "lookup_order", "arguments": {"order_number": "123"},
                    "call_id": "call_1", "session_id": 7, "agent_id": 3}  # fmt: skip
    assert headers["X-VP-Nonce"] == nonce and len(nonce) == 32
    timestamp = headers["X-VP-Timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    assert headers["X-VP-Signature"] == "v1=" + expected.hexdigest()
    assert abs(int(timestamp) - time.time()) < 5


async def test_during_a_rotation_calls_are_signed_with_both_secrets_and_each_has_a_nonce(
    tool_server,
):
    old = "whsec_previous-secret"
    runner = executor(extra_signing_secrets=(old,))
    for call_id in ("call_1", "call_2"):
        await runner.call(tool(tool_server.url + "/ok"), call_id=call_id, arguments="{}")
    nonces = set()
    for _, headers, body in tool_server.requests:
        signed = f"{headers['X-VP-Timestamp']}.".encode() + body
        expected = [
            "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
            for secret in (SECRET, old)
        ]
        assert headers["X-VP-Signature"].split(",") == expected
        nonces.add(json.loads(body)["nonce"])
    assert len(nonces) == 2  # a receiver that remembers nonces refuses a replay


@pytest.mark.parametrize(
    ("path", "timeout", "kind", "requests"),
    [
        ("/slow", 0.3, "timeout", 1),
        ("/fail", 5, "http_error", 1),
        ("/big", 5, "response_too_large", 1),
    ],
)
async def test_webhook_failures_become_error_outputs(tool_server, path, timeout, kind, requests):
    result = await executor().call(
        tool(tool_server.url + path, timeout=timeout), call_id="c", arguments="{}"
    )
    assert result.error == kind
    assert json.loads(result.output)["error"]["type"] == kind
    assert len(tool_server.requests) == requests  # an answered request is never retried


async def test_network_errors_are_retried_a_bounded_number_of_times():
    result = await executor(retries=2).call(
        tool("http://127.0.0.1:9/none"), call_id="c", arguments=""
    )
    assert result.error == "network_error"
    assert "could not reach the tool" in json.loads(result.output)["error"]["message"]


async def test_plain_text_answers_are_wrapped_and_private_addresses_refused(tool_server):
    result = await executor().call(tool(tool_server.url + "/text"), call_id="c", arguments="{}")
    assert json.loads(result.output) == {"result": "shipped yesterday"}
    refused = await executor(allow_private_addresses=False).call(
        tool(tool_server.url + "/ok"), call_id="c", arguments="{}"
    )
    assert refused.error == "forbidden_address"
    assert len(tool_server.requests) == 1


async def test_a_redirect_is_refused_and_not_followed(tool_server):
    # Private addresses are allowed for the first hop only because loopback is what a test can
    # reach; the rule under test is that no redirect is followed, wherever it points.
    result = await executor().call(tool(tool_server.url + "/redirect"), call_id="c", arguments="{}")
    assert result.error == "redirect_refused"
    assert json.loads(result.output)["error"]["type"] == "redirect_refused"
    assert "internal" not in result.output
    assert [path for path, _, _ in tool_server.requests] == ["/redirect"]


async def test_denied_address_literals_are_refused_before_connecting():
    for host in ("100.64.0.1", "[::ffff:127.0.0.1]", "169.254.169.254", "[fd00::1]",
                 "[64:ff9b::7f00:1]", "224.0.0.1", "0.0.0.0"):  # fmt: skip
        result = await executor(allow_private_addresses=False).call(
            tool(f"http://{host}:9/hook", timeout=2), call_id="c", arguments="{}"
        )
        assert (host, result.error) == (host, "forbidden_address")


class HangingServer:
    """Tenant A's webhook hangs until released; anything else answers at once."""

    def __init__(self, loop, expected_hanging):
        self.release = threading.Event()
        self.arrived = asyncio.Event()
        self.hanging = self.most_hanging = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/hang":
                    with lock:
                        outer.hanging += 1
                        outer.most_hanging = max(outer.most_hanging, outer.hanging)
                        if outer.hanging == expected_hanging:
                            loop.call_soon_threadsafe(outer.arrived.set)
                    outer.release.wait(30)
                    with lock:
                        outer.hanging -= 1
                payload = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()


class NoDefaultExecutor(ThreadPoolExecutor):
    """Installed as the loop's default executor: webhook calls must not touch it (the
    upstream's DNS lookups share it)."""

    def submit(self, *args, **kwargs):
        raise AssertionError("the default thread pool was used")


async def test_a_tenant_with_hanging_webhooks_does_not_delay_another():
    loop = asyncio.get_running_loop()
    loop.set_default_executor(NoDefaultExecutor(max_workers=1))
    server = HangingServer(loop, expected_hanging=4)
    limiter = TenantLimiter(4)
    tenant_a = executor(tenant_id="A", limiter=limiter)
    tenant_b = executor(tenant_id="B", limiter=limiter)
    try:
        a_calls = [
            asyncio.create_task(
                tenant_a.call(
                    tool(server.url + "/hang", timeout=30), call_id=f"a{i}", arguments="{}"
                )  # fmt: skip
            )
            for i in range(7)
        ]
        await asyncio.wait_for(server.arrived.wait(), 10)  # A's four slots are all stuck
        assert (limiter.in_flight("A"), limiter.waiting("A")) == (4, 3)
        result = await asyncio.wait_for(
            tenant_b.call(tool(server.url + "/ok"), call_id="b1", arguments="{}"), 10
        )
        assert (result.error, json.loads(result.output)) == ("", {"path": "/ok"})
        assert [call.done() for call in a_calls] == [False] * 7  # B finished while A hangs
        server.release.set()
        answers = await asyncio.wait_for(asyncio.gather(*a_calls), 20)
        assert [(a.error, json.loads(a.output)) for a in answers] == [("", {"path": "/hang"})] * 7
        assert server.most_hanging == 4  # never more than A's share at once
    finally:
        server.close()


class ScriptedExecutor:
    """Answers each tool after a given delay (gates let a test decide when)."""

    def __init__(self):
        self.gates: dict[str, asyncio.Event] = {}
        self.calls = []

    async def call(self, tool, *, call_id, arguments):
        self.calls.append((tool["name"], call_id, arguments))
        gate = self.gates.setdefault(call_id, asyncio.Event())
        await gate.wait()
        return ToolResult(output=json.dumps({"tool": tool["name"]}), latency_ms=42)


TOOLS = (
    {"name": "lookup_order", "execution": "webhook", "webhook_url": "https://t.example/o"},
    {"name": "check_weather", "execution": "webhook", "webhook_url": "https://t.example/w"},
    {"name": "open_map", "execution": "client"},
)


async def make(tools=TOOLS):
    upstream, client, recorder, scripted = (
        FakeUpstream(),
        FakeClient(),
        ListRecorder(),
        ScriptedExecutor(),
    )

    async def connect():
        return upstream

    bridge = RealtimeBridge(
        policy=make_policy(channel="widget", tools=tools), client=client, connect_upstream=connect,
        recorder=recorder, tool_executor=scripted, clock=Clock(),
    )  # fmt: skip
    await bridge.start()
    await settle()
    return bridge, upstream, client, recorder, scripted


def call_done(response_id, call_id, name, arguments="{}"):
    return {"type": "response.output_item.done", "response_id": response_id,
            "item": {"id": f"item_{call_id}", "type": "function_call", "call_id": call_id,
                     "name": name, "arguments": arguments}}  # fmt: skip


async def test_parallel_calls_run_concurrently_and_one_response_create_follows(tool_server):
    bridge, upstream, client, recorder, scripted = await make()
    upstream.push({"type": "response.created", "response": {"id": "r1"}})
    upstream.push(call_done("r1", "c1", "lookup_order", '{"order_number":"123"}'))
    upstream.push(call_done("r1", "c2", "check_weather"))
    upstream.push({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    await settle()
    assert [name for name, _, _ in scripted.calls] == [
        "lookup_order",
        "check_weather",
    ]  # both started
    scripted.gates["c2"].set()
    await settle()
    assert upstream.received_types()[-1] == "conversation.item.create"
    assert "response.create" not in upstream.received_types()  # c1 is still running
    scripted.gates["c1"].set()
    await settle()
    assert upstream.received_types()[1:] == [
        "conversation.item.create", "conversation.item.create", "response.create",
    ]  # fmt: skip
    outputs = [json.loads(m)["item"] for m in upstream.received[1:3]]
    assert [(o["call_id"], json.loads(o["output"])) for o in outputs] == [
        ("c2", {"tool": "check_weather"}), ("c1", {"tool": "lookup_order"}),
    ]  # fmt: skip
    recorded = [
        (r.kind, r.data.get("call_id"), r.data.get("latency_ms")) for r in recorder.transcripts
    ]
    assert ("function_call_output", "c1", 42) in recorded and (
        "function_call",
        "c1",
        None,
    ) in recorded
    await bridge.close("client_closed")


async def test_client_tool_round_trip_and_unknown_call_ids_refused():
    bridge, upstream, client, _, scripted = await make()
    upstream.push({"type": "response.created", "response": {"id": "r1"}})
    upstream.push(call_done("r1", "c9", "open_map"))
    upstream.push({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    await settle()
    assert scripted.calls == []  # client-side: the platform does not run it
    assert any(e.get("item", {}).get("call_id") == "c9" for e in client.events())  # forwarded
    answer = {"id": "item_mine", "type": "function_call_output", "call_id": "c9",
              "output": '{"ok":true}'}  # fmt: skip
    output = {"type": "conversation.item.create", "event_id": "evt_1", "item": answer}
    await bridge.from_client(json.dumps({**output, "item": {**output["item"], "call_id": "c404"}}))
    await bridge.from_client(json.dumps(output))
    await bridge.from_client(json.dumps(output))  # a second answer to the same call
    await settle()
    assert client.errors() == ["unknown_call_id", "unknown_call_id"]
    # As with OpenAI: the output goes up as the client sent it (its item id kept), and the
    # next response is the client's to ask for; the platform adds no response.create.
    assert [json.loads(message) for message in upstream.received[1:]] == [output]
    await bridge.from_client(json.dumps({"type": "response.create"}))
    assert upstream.received_types()[1:] == ["conversation.item.create", "response.create"]
    await bridge.close("client_closed")


async def test_barge_in_during_a_tool_call_keeps_the_conversation_going():
    bridge, upstream, client, _, scripted = await make()
    upstream.push({"type": "response.created", "response": {"id": "r1"}})
    upstream.push(call_done("r1", "c1", "lookup_order"))
    upstream.push({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    await settle()
    # The user speaks while the tool runs: their turn's response comes first.
    upstream.push({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0})
    upstream.push({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 800})
    upstream.push({"type": "response.created", "response": {"id": "r2"}})
    await settle()
    scripted.gates["c1"].set()
    await settle()
    # The output is delivered at once, but no response.create races the active response.
    assert upstream.received_types()[1:] == ["conversation.item.create"]
    await bridge.from_client(json.dumps({"type": "response.create"}))  # nor the client's
    assert client.errors() == ["conversation_already_has_active_response"]
    upstream.push({"type": "response.done", "response": {"id": "r2", "status": "completed"}})
    await settle()
    assert upstream.received_types()[1:] == ["conversation.item.create", "response.create"]
    # If the upstream says a response is active to the platform's own request, that is
    # absorbed, not shown, and asked again after the next response; the same error answering
    # a client's event reaches the client.
    own = json.loads(upstream.received[-1])["event_id"]
    busy = {"type": "invalid_request_error", "code": "conversation_already_has_active_response",
            "message": "busy"}  # fmt: skip
    upstream.push({"type": "error", "error": {**busy, "event_id": own}})
    upstream.push({"type": "error", "error": {**busy, "event_id": "evt_client"}})
    await settle()
    assert client.errors() == ["conversation_already_has_active_response"] * 2
    upstream.push({"type": "response.created", "response": {"id": "r3"}})
    upstream.push({"type": "response.done", "response": {"id": "r3", "status": "completed"}})
    await settle()
    assert upstream.received_types()[1:] == [
        "conversation.item.create", "response.create", "response.create",
    ]  # fmt: skip
    assert not bridge.closed.is_set()
    await bridge.close("client_closed")


async def test_preambles_add_the_filler_instruction():
    tools = ({**TOOLS[0], "filler_phrase": "One moment while I look that up."},)
    policy = make_policy(tools=tools, tool_preambles=True)
    from agents.realtime.policy import session_config

    instructions = session_config(policy)["instructions"]
    assert instructions.startswith("Secret shop prompt\n\n# Preambles")
    assert '- before lookup_order: "One moment while I look that up."' in instructions
    assert session_config(make_policy(tools=tools))["instructions"] == "Secret shop prompt"


async def test_a_client_that_never_answers_gets_a_timeout_output():
    tools = ({"name": "open_map", "execution": "client", "timeout_seconds": 0.05},)
    bridge, upstream, client, recorder, _ = await make(tools)
    upstream.push({"type": "response.created", "response": {"id": "r1"}})
    upstream.push(call_done("r1", "c5", "open_map"))
    upstream.push({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    await until(lambda: len(upstream.received) >= 3, "the timeout output and response.create")
    assert upstream.received_types()[1:] == ["conversation.item.create", "response.create"]
    output = json.loads(json.loads(upstream.received[1])["item"]["output"])
    assert output["error"]["type"] == "timeout"
    # A late answer from the client is refused: the call is closed.
    late = {"type": "function_call_output", "call_id": "c5", "output": "{}"}
    await bridge.from_client(json.dumps({"type": "conversation.item.create", "item": late}))
    assert client.errors() == ["unknown_call_id"]
    await bridge.close("client_closed")
    # Nothing more went upstream once the late answer had been handled and the session closed.
    assert upstream.received_types()[1:] == ["conversation.item.create", "response.create"]


async def test_a_widget_is_not_told_what_a_tenants_servers_answered():
    """Webhook and MCP definitions and answers stay with the platform; the page's own tool
    and its own answer reach the widget as they are."""
    bridge, upstream, client, _, scripted = await make()
    session = {"id": "s", "type": "realtime", "instructions": "Secret shop prompt", "tools": [
        {"type": "function", "name": "lookup_order", "parameters": {}},
        {"type": "function", "name": "open_map", "parameters": {}},
        {"type": "mcp", "server_label": "crm", "server_url": "https://crm.internal.example/mcp"},
    ]}  # fmt: skip
    upstream.push({"type": "session.updated", "session": session})
    upstream.push({"type": "response.created", "response": {"id": "r1"}})
    upstream.push(call_done("r1", "c1", "lookup_order"))
    upstream.push({"type": "response.done", "response": {"id": "r1", "status": "completed"}})
    await settle()
    scripted.gates["c1"].set()
    await settle()
    sent = json.loads(upstream.received[-2])["item"]  # the platform's function_call_output
    assert sent["type"] == "function_call_output" and "lookup_order" in sent["output"]
    upstream.push({"type": "conversation.item.added", "item": sent})
    mcp = {"id": "m1", "type": "mcp_call", "server_label": "crm", "name": "find",
           "arguments": '{"email":"a@b.c"}', "output": "customer 42: Alice, VIP"}  # fmt: skip
    upstream.push({"type": "response.output_item.done", "response_id": "r2", "item": mcp})
    listed = {"id": "l1", "type": "mcp_list_tools", "server_label": "crm",
              "tools": [{"name": "find", "input_schema": {}}]}  # fmt: skip
    upstream.push({"type": "conversation.item.done", "item": listed})
    mine = {"id": "item_mine", "type": "function_call_output", "call_id": "c9",
            "output": '{"ok":true}'}  # fmt: skip
    upstream.push({"type": "conversation.item.added", "item": mine})
    await settle()
    events = client.events()
    told = next(e for e in events if e["type"] == "session.updated")["session"]
    assert [tool["name"] for tool in told["tools"]] == ["open_map"]
    assert "crm.internal" not in json.dumps(events)
    outputs = [e["item"] for e in events if e.get("item", {}).get("type") == "function_call_output"]
    assert [(o["call_id"], o["output"]) for o in outputs] == [("c1", ""), ("c9", '{"ok":true}')]
    told_mcp = next(e["item"] for e in events if e.get("item", {}).get("type") == "mcp_call")
    assert (told_mcp["arguments"], told_mcp["output"]) == ("", "")
    told_list = next(e["item"] for e in events if e.get("item", {}).get("type") == "mcp_list_tools")
    assert told_list["tools"] == []
    await bridge.close("client_closed")
