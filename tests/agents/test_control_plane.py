"""The control plane's two loops against a layer that fails: both outlive its errors."""

from __future__ import annotations

import asyncio

import pytest

from agents import control_plane
from tenants.metrics import CHANNEL_LAYER_ERRORS
from tests.waiting import until


class FlakyLayer:
    """A channel layer that fails ``failures`` times, then answers (and records joins)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.joins: list[tuple[str, str]] = []
        self.discards: list[tuple[str, str]] = []

    def _maybe_fail(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("Redis is away")

    async def receive(self, channel: str) -> dict:
        self._maybe_fail()
        return {"type": "session.end_requested", "reason": "ended_by_admin"}

    async def group_add(self, group: str, channel: str) -> None:
        self._maybe_fail()
        self.joins.append((group, channel))

    async def group_discard(self, group: str, channel: str) -> None:
        self._maybe_fail()
        self.discards.append((group, channel))


async def test_a_receive_outlives_layer_errors_and_asks_to_join_again(monkeypatch):
    monkeypatch.setattr(control_plane, "CONTROL_BACKOFF_S", 0.001)
    errors = CHANNEL_LAYER_ERRORS.labels(operation="receive")
    before = errors._value.get()
    rejoins: list[bool] = []
    message = await control_plane.receive(
        FlakyLayer(failures=3),
        "specific.x!y",
        label="test",
        on_failure=lambda: rejoins.append(True),
    )
    assert message == {"type": "session.end_requested", "reason": "ended_by_admin"}
    assert errors._value.get() - before == 3
    assert rejoins == [True, True, True]  # each failure asks for the group again


class CancelSwallowingLayer:
    """A layer whose receive, when cancelled, raises another error instead of the cancellation
    (as channels-redis's clean-up can): the cancellation must still end the receive."""

    def __init__(self) -> None:
        self.receiving = asyncio.Event()
        self.receives = 0

    async def receive(self, channel: str) -> dict:
        self.receives += 1
        self.receiving.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("clean-up failed") from None
        raise AssertionError("unreachable")


async def test_a_cancelled_receive_ends_even_when_the_layer_replaces_the_cancellation(monkeypatch):
    monkeypatch.setattr(control_plane, "CONTROL_BACKOFF_S", 0.001)
    layer = CancelSwallowingLayer()
    task = asyncio.create_task(control_plane.receive(layer, "specific.x!y", label="test"))
    await asyncio.wait_for(layer.receiving.wait(), 5)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()
    assert layer.receives == 1  # not retried after the cancellation


async def test_a_membership_joins_through_failures_again_and_again_and_leaves(monkeypatch):
    monkeypatch.setattr(control_plane, "CONTROL_BACKOFF_S", 0.001)
    monkeypatch.setattr(control_plane, "REREGISTER_S", 0.05)
    layer = FlakyLayer(failures=2)
    membership = control_plane.Membership(layer, "vp-session-7", "specific.x!y", label="test")
    await membership.first_try(5)
    # Joined after two failures, then joined again periodically (a restart forgets it).
    await until(lambda: len(layer.joins) >= 3, "three joins")
    layer.failures = 1  # leaving while Redis is away: bounded, counted, no exception
    await membership.leave()
    assert set(layer.joins) == {("vp-session-7", "specific.x!y")} and layer.discards == []
    with pytest.raises(asyncio.CancelledError):  # and it joins no more
        await membership._task
