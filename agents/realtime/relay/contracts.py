"""What the relay talks to, and the records it hands over. No I/O here, only shapes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from billing.usage import UsageRecord

__all__ = [
    "CallControl", "ClientSink", "Continuation", "NullRecorder", "Recorder", "SegmentRecord",
    "SpendGuard", "ToolExecutor",
    "TranscriptRecord", "Upstream", "UsageRecord",
]  # fmt: skip


class ClientSink(Protocol):
    async def send_text(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Upstream(Protocol):
    async def send(self, message: str) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class TranscriptRecord:
    item_id: str | None  # None when the upstream's item has no id: the recorder skips it
    sequence: int
    role: str
    kind: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SegmentRecord:
    """One upstream session of the conversation (the first, or one it continued in)."""

    upstream_session_id: str
    reason: str  # "initial", "max_duration", "context_window", "upstream_drop"…
    seed_summary: str = ""
    gap_ms: int | None = None


class Recorder(Protocol):
    """Receives what must be stored. Every method must return at once (it may only enqueue)."""

    def record_segment(self, record: SegmentRecord) -> None: ...

    def record_transcript(self, record: TranscriptRecord) -> None: ...

    def record_usage(self, record: UsageRecord) -> None: ...

    def record_audio(self, *, in_ms: int, out_ms: int) -> None: ...


class NullRecorder:
    """Stores nothing (benchmarks and tests that only look at the wire)."""

    def record_segment(self, record: SegmentRecord) -> None:
        pass

    def record_transcript(self, record: TranscriptRecord) -> None:
        pass

    def record_usage(self, record: UsageRecord) -> None:
        pass

    def record_audio(self, *, in_ms: int, out_ms: int) -> None:
        pass


class ToolExecutor(Protocol):
    async def call(self, tool: dict[str, Any], *, call_id: str, arguments: str) -> Any:
        """Run a webhook tool; the result has ``output``, ``latency_ms`` and ``error``."""
        ...


class CallControl(Protocol):
    """What the platform can do with a phone call beyond its media stream (Twilio's API)."""

    async def transfer(self, number: str) -> str | None:
        """Redirect the live call to ``number``; None when done, else why it failed."""
        ...


class SpendGuard(Protocol):
    """Live spend cap of a session. Both methods are in-memory and return at once."""

    def allows_response(self) -> bool:
        """May another response start? (checked before forwarding a client's response.create)"""
        ...

    def on_usage(self, record: UsageRecord) -> bool:
        """Count a response's usage; False once the cap is reached."""
        ...


@dataclass(frozen=True)
class Continuation:
    """How a conversation outlives its upstream sessions.

    ``seed`` returns an object with ``summary`` (str) and ``turns`` (objects with ``role`` and
    ``text``): what a new segment starts from.
    """

    seed: Callable[[], Awaitable[Any]]
    rotate_after_s: float | None = 3300.0
    rotate_grace_s: float = 240.0
    token_threshold: int | None = 100_000
    reconnect_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    rate_limited_backoff_s: float = 5.0
