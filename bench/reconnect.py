"""Measure the silence gap at a reconnect: ``python -m bench.reconnect [--count 20]``.

Runs the platform's full API socket path in-process (ASGI application, consumer, bridge,
recorder, summary seed from the database) on the local engine, with rotation every second, and
holds a conversation across ``count`` reconnects. The gap of a reconnect is from the moment the
old upstream is closed until the new one is configured, seeded with the summary and the last
turns, and any audio held meanwhile has been delivered: the time during which what a user says
waits instead of reaching an engine. It prints the median and the maximum.

``--summarizer-delay 3`` makes every summary take 3 s more (a slow summarizer model); meanwhile
new sessions are opened on the same process one after another, and their connect time (until
``session.created``) is printed too: neither may wait on the summarizer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time


def setup(data_dir: str) -> tuple[int, str]:
    os.environ.update(
        {
            "VP_DATA_DIR": data_dir,
            "VP_SESSION_ROTATE_SECONDS": "1",
            "VP_LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
        }
    )
    for name in ("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from agents.configuration import agent_create
    from tenants import services

    owner = services.user_get_or_create(email="bench@example.com", password="bench-pass-123")
    tenant = services.tenant_create(slug="bench", name="Bench", owner=owner)
    agent = agent_create(
        tenant=tenant, actor=owner,
        fields={"name": "bench", "provider": "local", "turn_detection": "none"},
    )  # fmt: skip
    _, raw_key = services.api_key_issue(tenant=tenant, name="bench", default_agent=agent)
    return tenant.pk, raw_key


async def segments_recorded(tenant_id: int, count: int, timeout: float = 30) -> None:
    from channels.db import database_sync_to_async

    from agents.models import SessionSegment
    from tenants.scoping import tenant_scope

    def recorded() -> int:
        with tenant_scope(tenant_id):
            return SessionSegment.objects.count()

    async with asyncio.timeout(timeout):
        while await database_sync_to_async(recorded)() < count:
            await asyncio.sleep(0.02)


async def probe_connects(raw_key: str, latencies: list[float], stop: asyncio.Event) -> None:
    """Open new sessions one after another until ``stop``; record each one's connect time."""
    from channels.testing import WebsocketCommunicator

    from voiceplatform.asgi import application

    while not stop.is_set():
        started = time.monotonic()
        communicator = WebsocketCommunicator(
            application, "/v1/realtime", headers=[(b"authorization", f"Bearer {raw_key}".encode())]
        )
        connected, _ = await communicator.connect(timeout=30)
        assert connected
        try:
            event = json.loads(await communicator.receive_from(timeout=10))
            assert event["type"] == "session.created", event
        except TimeoutError:
            print("a new session got no session.created within 10 s", file=sys.stderr)
        latencies.append(time.monotonic() - started)
        await communicator.disconnect()
        await asyncio.sleep(0.1)


async def converse(tenant_id: int, raw_key: str, count: int, probe: list[float] | None) -> None:
    from channels.testing import WebsocketCommunicator

    from voiceplatform.asgi import application

    stop = asyncio.Event()
    prober = None
    if probe is not None:
        prober = asyncio.create_task(probe_connects(raw_key, probe, stop))
    communicator = WebsocketCommunicator(
        application, "/v1/realtime", headers=[(b"authorization", f"Bearer {raw_key}".encode())]
    )
    connected, _ = await communicator.connect()
    assert connected

    async def until(event_type: str) -> dict:
        while True:
            event = json.loads(await communicator.receive_from(timeout=30))
            if event["type"] == "error":
                raise RuntimeError(event["error"])
            if event["type"] == event_type:
                return event

    await until("session.created")
    for turn in range(count):
        text = f"Turn {turn}: my order number is {4000 + turn} for delivery on Friday."
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        await communicator.send_json_to({"type": "conversation.item.create", "item": item})
        await communicator.send_json_to({"type": "response.create"})
        await until("response.done")
        # The rotation comes at the quiet moment after the answer; the client does not see it.
        await segments_recorded(tenant_id, turn + 2)
        print(f"  reconnect {turn + 1}/{count}", file=sys.stderr, end="\r")
    await communicator.disconnect()
    stop.set()
    if prober is not None:
        await prober


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument(
        "--summarizer-delay", type=float, default=0.0, help="seconds added to every summary"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vp-reconnect-") as data_dir:
        tenant_id, raw_key = setup(data_dir)
        probe: list[float] | None = None
        if args.summarizer_delay:
            slow_down_summaries(args.summarizer_delay)
            probe = []
        started = time.monotonic()
        asyncio.run(converse(tenant_id, raw_key, args.count, probe))
        from agents.models import SessionSegment
        from tenants.scoping import tenant_scope

        with tenant_scope(tenant_id):
            rows = list(
                SessionSegment.objects.exclude(reason="initial").values_list("gap_ms", flat=True)
            )
    gaps = [gap for gap in rows if gap is not None]
    print(f"reconnects measured: {len(gaps)} (in {time.monotonic() - started:.1f} s)")
    print(f"silence gap at a reconnect: median {statistics.median(gaps):.0f} ms, "
          f"max {max(gaps):.0f} ms, min {min(gaps):.0f} ms")  # fmt: skip
    if probe:
        print(f"summarizer delay {args.summarizer_delay:.1f} s; new sessions meanwhile: "
              f"{len(probe)}, connect median {statistics.median(probe) * 1000:.0f} ms, "
              f"max {max(probe) * 1000:.0f} ms")  # fmt: skip


def slow_down_summaries(delay: float) -> None:
    from agents import compaction

    summarize = compaction._summarize

    def slow(*args, **kwargs):
        time.sleep(delay)
        return summarize(*args, **kwargs)

    compaction._summarize = slow


if __name__ == "__main__":
    main()
