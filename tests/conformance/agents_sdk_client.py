"""One OpenAI Agents SDK session against the platform, as a tenant backend would run it.

Run in its own process by ``test_agents_sdk.py``: the Agents SDK's import name is ``agents``,
the platform's Django app's too, and it needs ``websockets<17`` while the platform pins 17. So
this script runs with only the SDK's own install directory on ``PYTHONPATH`` (and ``python -P``,
so the repository is not on ``sys.path``); it imports nothing from the repository.

    python -P agents_sdk_client.py '{"scenario": "text" | "audio" | "tool", "url": "ws://…",
                                     "api_key": "…", "text": "…", "audio_path": "…"}'

Prints one JSON object: every raw server event the SDK received (in order), the tool's runs,
the session's error events and exceptions, and the last-turn transcript.
"""

# ruff: noqa: I001 - here `agents` is the Agents SDK, not the first-party app ruff assumes
from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from agents import function_tool
from agents.realtime import RealtimeAgent, RealtimeRunner
from agents.realtime.model_inputs import RealtimeModelSendRawMessage

TURN_TIMEOUT = 40.0
CHUNK_20MS = 960
ORDER = {"status": "shipped", "eta": "Friday"}
tool_runs: list[dict[str, Any]] = []


@function_tool
def lookup_order(order_number: str) -> str:
    """Look up an order by its number."""
    tool_runs.append({"order_number": order_number})
    return json.dumps(ORDER)


class RawEvents:
    """A model listener: every raw server event, the model's exceptions, and a way to wait."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.exceptions: list[str] = []
        self.closed = False
        self.changed = asyncio.Condition()

    async def on_event(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        async with self.changed:
            if kind == "raw_server_event":
                self.events.append(event.data)
            elif kind == "exception":
                self.exceptions.append(f"{event.context}: {event.exception!r}")
                self.closed = self.closed or "closed" in str(event.context)
            elif kind in ("end_of_stream", "connection_status"):
                self.closed = self.closed or kind == "end_of_stream" or event.status != "connected"
            self.changed.notify_all()

    async def wait(self, predicate, start: int = 0) -> int:
        """Index of the first event from ``start`` matching ``predicate`` (waits for it)."""
        async with self.changed:
            while True:
                for index in range(start, len(self.events)):
                    if predicate(self.events[index]):
                        return index
                if self.closed:
                    raise ConnectionError("the connection closed first")
                await self.changed.wait()


def answered(event: dict[str, Any]) -> bool:
    """A ``response.done`` whose output has a message (not only function calls)."""
    if event.get("type") != "response.done":
        return False
    output = (event.get("response") or {}).get("output") or []
    return any(item.get("type") == "message" for item in output)


async def drive(session: Any, raw: RawEvents, spec: dict[str, Any]) -> int:
    """One turn, then a barrier; returns the index of the first event after the turn."""
    await raw.wait(lambda e: e.get("type") == "session.created")
    start = len(raw.events)
    if spec["scenario"] == "audio":
        pcm = Path(spec["audio_path"]).read_bytes()
        for i in range(0, len(pcm), CHUNK_20MS):
            await session.send_audio(pcm[i : i + CHUNK_20MS])
    else:
        await session.send_message(spec["text"])
    await raw.wait(answered, start)
    # A barrier: whatever the session starts because of earlier events arrives before this.
    barrier = len(raw.events)
    await session.model.send_event(
        RealtimeModelSendRawMessage(message={"type": "input_audio_buffer.clear"})
    )
    await raw.wait(lambda e: e.get("type") == "input_audio_buffer.cleared", barrier)
    return barrier


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    agent = RealtimeAgent(
        name="Assistant",
        instructions="You help with orders.",
        tools=[lookup_order] if spec["scenario"] == "tool" else [],
    )
    runner = RealtimeRunner(agent)
    session = await runner.run(model_config={"url": spec["url"], "api_key": spec["api_key"]})
    raw = RawEvents()
    session.model.add_listener(raw)  # before connecting: session.created is recorded too
    session_errors: list[str] = []
    exceptions: list[str] = []

    async def consume() -> None:
        async for event in session:
            if event.type == "error":
                session_errors.append(repr(event.error))

    barrier = -1
    try:
        async with asyncio.timeout(TURN_TIMEOUT), session:
            consumer = asyncio.create_task(consume())
            try:
                barrier = await drive(session, raw, spec)
            finally:
                consumer.cancel()
    except TimeoutError:
        exceptions.append(f"timed out after {TURN_TIMEOUT} s")
    except Exception as error:  # reported, not raised: the test reads the JSON
        exceptions.append(repr(error))
    return {
        "raw": raw.events,
        "barrier": barrier,
        "tool_runs": tool_runs,
        "session_errors": session_errors,
        "exceptions": exceptions + raw.exceptions,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
