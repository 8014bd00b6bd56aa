"""Load generator: sessions streaming 20 ms PCM16 24 kHz frames at real-time pace.

Run by the orchestrator (``bench.runner``) as ``python -m bench.client --url ... --sessions N``.
Protocol on stdio: the client connects every session (``session.created``; against a plain
relay it configures the session and waits for ``session.updated``), prints ``READY <json>``,
waits for ``GO <epoch>`` on stdin, streams from
that instant on an absolute schedule (t0 + phase_i + k * 20 ms, phases spread evenly over the
20 ms), drains the outstanding echoes and prints ``RESULT <json>``.

Each frame's first 6 audio bytes carry (session, sequence number), so an echo is matched to its
own send time (a loss or a reordering is seen, not smeared over later frames). One ticker task
sends every frame that is due, straight to the transports (``bench.wsproto_lite``): the client
spends a few microseconds per frame, so that it is not the bottleneck on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import sys
import time
from urllib.parse import urlsplit

from bench import wsproto_lite

FRAME_S = 0.020
AUDIO_BYTES = 960  # 20 ms of PCM16 mono at 24 kHz
_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'
_APPEND_TAIL = '"}'
_DELTA_HEAD = '{"type":"response.output_audio.delta"'
_DELTA_KEY = '"delta":"'
_TAG = struct.Struct(">HI")  # session index (mod 65536), sequence number: 6 bytes = 8 base64


class Session:
    __slots__ = (
        "index",
        "phase",
        "ws",
        "inbox",
        "sent_at",
        "received",
        "nsent",
        "ndelivered",
        "nwindow_received",
        "rtts_us",
        "events",
        "errors",
        "closed",
        "mismatched",
        "duplicates",
        "window",
    )

    def __init__(self, index: int, phase: float) -> None:
        self.index = index
        self.phase = phase
        self.ws: wsproto_lite.ClientProtocol | None = None
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent_at: list[float] = []
        self.received = bytearray()
        self.nsent = 0
        self.ndelivered = 0
        self.nwindow_received = 0
        self.rtts_us: list[int] = []
        self.events: dict[str, int] = {}
        self.errors: list[str] = []
        self.closed: str | None = None
        self.mismatched = 0
        self.duplicates = 0
        self.window = (0.0, 0.0)

    # --- events other than audio deltas -----------------------------------------------
    def note(self, message: str) -> str | None:
        try:
            event = json.loads(message)
            kind = str(event.get("type"))
        except (ValueError, AttributeError):
            kind = "<unparsable>"
            event = {}
        self.events[kind] = self.events.get(kind, 0) + 1
        if kind == "error" and len(self.errors) < 5:
            error = event.get("error") or {}
            self.errors.append(f"{error.get('code')}: {error.get('message')}"[:300])
        return kind

    # --- streaming-phase receive path (called from data_received) ---------------------
    def on_stream_text(
        self,
        message: str,
        perf=time.perf_counter,
        unpack=_TAG.unpack,
        b64decode=base64.b64decode,
    ) -> None:
        now = perf()
        if message.startswith(_DELTA_HEAD):
            at = message.find(_DELTA_KEY, 37)
            try:
                session, seq = unpack(b64decode(message[at + 9 : at + 17]))
            except Exception:  # noqa: BLE001
                self.mismatched += 1
                return
            sent_at = self.sent_at
            if session != (self.index & 0xFFFF) or seq >= len(sent_at) or not sent_at[seq]:
                self.mismatched += 1
                return
            if self.received[seq]:
                self.duplicates += 1
                return
            self.received[seq] = 1
            self.ndelivered += 1
            if self.window[0] <= now < self.window[1]:
                self.nwindow_received += 1
            sent = sent_at[seq]
            if self.window[0] <= sent < self.window[1]:
                self.rtts_us.append(int((now - sent) * 1e6))
        else:
            self.note(message)

    def on_close(self) -> None:
        self.inbox.put_nowait(None)
        if self.closed is None and self.ws is not None:
            self.closed = f"closed by server: code {self.ws.close_code} {self.ws.close_reason!r}"


async def _open(args, session: Session, host: str, port: int, path: str) -> None:
    headers = {"Authorization": f"Bearer {args.bearer}"} if args.bearer else {}
    ws = await wsproto_lite.connect(host, port, path, headers, args.ready_timeout)
    session.ws = ws
    for message in ws.pending:
        session.inbox.put_nowait(message)
    ws.on_text = session.inbox.put_nowait
    ws.on_close = session.on_close
    seen: list[str] = []
    deadline = time.monotonic() + args.ready_timeout

    async def expect(kind: str) -> None:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {kind} within {args.ready_timeout:.0f}s (saw {seen})")
            message = await asyncio.wait_for(session.inbox.get(), remaining)
            if message is None:
                raise ConnectionError(
                    f"closed before {kind}: code {ws.close_code} {ws.close_reason!r} (saw {seen})"
                )
            got = session.note(message)
            seen.append(str(got))
            if got == kind:
                return
            if got == "error":
                raise RuntimeError(f"error before {kind}: {session.errors[-1]} (saw {seen})")

    await expect("session.created")
    if args.send_session_update:
        ws.send_text(
            json.dumps(
                {"type": "session.update", "session": {"type": "realtime", "instructions": "bench"}}
            )
        )
        await expect("session.updated")


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def _ticker(live: list[Session], t0: float, nframes: int, window, tail: str) -> list[int]:
    """Send every due frame; sessions are sorted by phase, so due order is round-robin."""
    late: list[int] = []
    perf = time.perf_counter
    pack = _TAG.pack
    b64encode = base64.b64encode
    encode = wsproto_lite.encode_text
    count = len(live)
    total = count * nframes
    start, end = window
    j = 0
    while j < total:
        now = perf()
        while j < total:
            k, i = divmod(j, count)
            session = live[i]
            target = t0 + session.phase + k * FRAME_S
            if target > now:
                break
            j += 1
            ws = session.ws
            if session.closed is not None or ws.transport.is_closing():
                continue
            if start <= target < end:
                late.append(int((now - target) * 1e6))
            frame = _APPEND_HEAD + b64encode(pack(session.index & 0xFFFF, k)).decode() + tail
            session.sent_at[k] = perf()
            ws.transport.write(encode(frame + _APPEND_TAIL))
            session.nsent += 1
            now = perf()
        else:
            break
        await asyncio.sleep(max(0.0, target - perf()))
    return late


async def main(args) -> None:
    total = args.total_sessions or args.sessions
    parts = urlsplit(args.url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    host, port = parts.hostname, parts.port
    sessions = [
        Session(i, (i % total) / total * FRAME_S)
        for i in range(args.first_index, args.first_index + args.sessions)
    ]
    tail = base64.b64encode(os.urandom(AUDIO_BYTES - _TAG.size)).decode()
    assert len(tail) + 8 == AUDIO_BYTES * 4 // 3

    # Connect: staggered, bounded concurrency, so the server sees arrivals, not a stampede.
    gate = asyncio.Semaphore(args.connect_concurrency)
    failures: list[str] = []

    async def open_one(position: int, session: Session) -> None:
        await asyncio.sleep(position * args.connect_stagger)
        async with gate:
            try:
                await _open(args, session, host, port, path)
            except Exception as exc:  # noqa: BLE001
                failures.append(f"{type(exc).__name__}: {exc}"[:500])
                if session.ws is not None:
                    session.ws.on_close = lambda: None
                    await session.ws.close()
                session.ws = None

    connect_started = time.perf_counter()
    await asyncio.gather(*(open_one(p, s) for p, s in enumerate(sessions)))
    connect_s = time.perf_counter() - connect_started
    live = [s for s in sessions if s.ws is not None]
    print(
        "READY "
        + json.dumps(
            {
                "connected": len(live),
                "failed": len(failures),
                "failures": failures[:5],
                "connect_s": connect_s,
            }
        ),
        flush=True,
    )

    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line.startswith("GO"):
        return
    go_epoch = float(line.split()[1])
    # Map the orchestrator's wall-clock start onto this process's perf_counter.
    t0 = time.perf_counter() + (go_epoch - time.time())
    nframes = int(round(args.seconds / FRAME_S))
    window = (t0 + args.warmup, t0 + args.seconds)
    live.sort(key=lambda s: s.phase)
    for s in live:
        s.sent_at = [0.0] * nframes
        s.received = bytearray(nframes)
        s.window = window
        s.ws.on_text = s.on_stream_text
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    late = await _ticker(live, t0, nframes, window, tail)
    deadline = time.perf_counter() + args.drain
    while time.perf_counter() < deadline and any(
        s.ndelivered < s.nsent and s.closed is None for s in live
    ):
        await asyncio.sleep(0.01)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    for s in live:
        s.ws.on_close = lambda: None
    await asyncio.gather(*(s.ws.close() for s in live), return_exceptions=True)

    rtts: list[int] = []
    events: dict[str, int] = {}
    errors: list[str] = []
    closed: list[str] = []
    for s in live:
        rtts.extend(s.rtts_us)
        for kind, count in s.events.items():
            events[kind] = events.get(kind, 0) + count
        errors.extend(s.errors)
        if s.closed:
            closed.append(s.closed)
    result = {
        "sessions": args.sessions,
        "connected": len(live),
        "sent": sum(s.nsent for s in live),
        "delivered": sum(s.ndelivered for s in live),
        "mismatched": sum(s.mismatched for s in live),
        "duplicates": sum(s.duplicates for s in live),
        "window_received": sum(s.nwindow_received for s in live),
        "window_sent": sum(1 for s in live for t in s.sent_at if window[0] <= t < window[1]),
        "rtts_us": rtts,
        "late_p50_us": _percentile(late, 0.50),
        "late_p99_us": _percentile(late, 0.99),
        "late_max_us": max(late) if late else float("nan"),
        "events": events,
        "error_events": events.get("error", 0),
        "errors": errors[:5],
        "closed": closed[:5],
        "closed_count": len(closed),
        "cpu_s": cpu,
        "wall_s": wall,
    }
    print("RESULT " + json.dumps(result), flush=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bearer", default="")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--first-index", type=int, default=0)
    parser.add_argument("--total-sessions", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--drain", type=float, default=3.0)
    parser.add_argument("--send-session-update", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--connect-concurrency", type=int, default=16)
    parser.add_argument("--connect-stagger", type=float, default=0.005)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
