"""A session's life, told to whoever listens (post-call analysis, tenant webhooks, recordings).

Each is sent once the change is committed, with ``session_id`` and ``tenant_id``:

* ``session_started``: a session was admitted.
* ``session_ended``: a session's end was recorded. Sent again when a later end replaces the
  sweep's "abandoned" guess (its real end arriving from the journal): receivers are idempotent
  per session.
* ``session_analyzed``: its post-call analysis is stored (``analysis_id`` too).
* ``recording_ready``: its recording is stored (``recording_id`` too).

A receiver that raises is logged and does not stop the others (``send_robust``): the session's
own bookkeeping never depends on what is built on top of it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

session_started = Signal()
session_ended = Signal()
session_analyzed = Signal()
recording_ready = Signal()


def send_on_commit(signal: Signal, **kwargs: Any) -> None:
    """Send ``signal`` once the current transaction commits (at once outside one)."""

    def send() -> None:
        for receiver, outcome in signal.send_robust(sender=None, **kwargs):
            if isinstance(outcome, Exception):
                logger.error(
                    "%s receiver %s failed: %r", _name(signal), receiver, outcome,
                    exc_info=(type(outcome), outcome, outcome.__traceback__),
                )  # fmt: skip

    transaction.on_commit(send)


def _name(signal: Signal) -> str:
    for name, value in globals().items():
        if value is signal:
            return name
    return "signal"
