"""The usage record billing is handed: what one response or one span of metered audio used.

Plain data (no Django), so that the realtime relay can build it without depending on billing's
models: the relay reports, billing prices and stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class UsageRecord:
    """One billable unit: a ``response.done`` (tokens) or a span of metered audio."""

    key: str  # unique per upstream response (or per metered span): the idempotency key
    model: str
    status: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    audio_ms: int = 0
