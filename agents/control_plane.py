"""Staying reachable through the channel layer (Redis in production), whatever it does.

A live session and a console live view each listen on a channel and sit in a group. Redis may
be down, restarted without persistence (the groups are forgotten) or slow; none of that may
stop a session, and both must become reachable again by themselves. So:

* ``Membership`` joins the group in a background task: retried with a capped backoff, and again
  every ``REREGISTER_S`` (cheap, idempotent, refreshes the group's expiry) or at once when a
  receive failed; its ``leave`` is bounded and best effort (a group expires on its own);
* ``receive`` reads the channel and outlives layer errors (counted, backed off, and each one
  asks the membership to join again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from tenants.metrics import CHANNEL_LAYER_ERRORS

logger = logging.getLogger(__name__)

# A failed layer call is retried after CONTROL_BACKOFF_S, doubling up to CONTROL_BACKOFF_MAX_S.
CONTROL_BACKOFF_S = 0.5
CONTROL_BACKOFF_MAX_S = 10.0
REREGISTER_S = 10.0
# Leaving the group at the end is best effort: never wait long.
DISCARD_TIMEOUT_S = 1.0


def control_backoff(failures: int) -> float:
    """Seconds to wait after the ``failures``-th failure in a row (1, 2, …)."""
    return min(CONTROL_BACKOFF_MAX_S, CONTROL_BACKOFF_S * 2 ** max(failures - 1, 0))


class Membership:
    """``channel_name`` in ``group``, kept there in the background until ``leave``."""

    def __init__(self, layer: Any, group: str, channel_name: str, *, label: str) -> None:
        self.layer = layer
        self.group = group
        self.channel_name = channel_name
        self.label = label
        self.rejoin = asyncio.Event()  # the layer failed: join again now
        self._tried = asyncio.Event()  # the first join succeeded or failed
        self._task = asyncio.create_task(self._keep_joined(), name=f"{label}-register")

    async def first_try(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the first join to succeed or fail."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._tried.wait()

    async def _keep_joined(self) -> None:
        failures = 0
        while True:
            try:
                await self.layer.group_add(self.group, self.channel_name)
            except Exception as error:
                _raise_if_cancelled(error)
                failures += 1
                CHANNEL_LAYER_ERRORS.labels(operation="group_add").inc()
                if failures == 1:
                    logger.warning("%s: joining %s failed (%r)", self.label, self.group, error)
                self._tried.set()
                await asyncio.sleep(control_backoff(failures))
                continue
            failures = 0
            self._tried.set()
            self.rejoin.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REREGISTER_S):
                    await self.rejoin.wait()

    def stop(self) -> None:
        self._task.cancel()

    async def leave(self) -> None:
        self.stop()
        try:
            async with asyncio.timeout(DISCARD_TIMEOUT_S):
                await self.layer.group_discard(self.group, self.channel_name)
        except Exception:  # Redis away: the group expires on its own
            CHANNEL_LAYER_ERRORS.labels(operation="group_discard").inc()


def _raise_if_cancelled(error: Exception) -> None:
    """The task was cancelled (its session ended) but the layer raised something else while
    cleaning up (channels-redis can): a retry loop must end, not outlive the session for ever."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from error


async def receive(
    layer: Any, channel_name: str, *, label: str, on_failure: Callable[[], None] = lambda: None
) -> dict[str, Any]:
    """The next message on ``channel_name``, however many layer errors come first (each one
    calls ``on_failure``: a membership should join again)."""
    failures = 0
    while True:
        try:
            message: dict[str, Any] = await layer.receive(channel_name)
            return message
        except Exception as error:
            _raise_if_cancelled(error)
            failures += 1
            CHANNEL_LAYER_ERRORS.labels(operation="receive").inc()
            if failures == 1:
                logger.warning("%s: channel layer receive failed (%r)", label, error)
            on_failure()
            await asyncio.sleep(control_backoff(failures))
