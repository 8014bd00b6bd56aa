"""Waiting on the event itself: a condition polled until it holds or a deadline passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

TIMEOUT = 10.0


async def until(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """Return as soon as ``condition()`` is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        await asyncio.sleep(0.005)


def until_sync(condition: Callable[[], object], what: str, timeout: float = TIMEOUT) -> None:
    """``until`` for threads and real processes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.02)
