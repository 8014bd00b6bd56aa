"""Billing tasks: thin, taking ids, idempotent (acks are late: a crash re-runs them)."""

from __future__ import annotations

import logging

from celery import shared_task
from django.db import transaction

from billing import budgets, services

logger = logging.getLogger(__name__)

TIME_LIMIT = 120
SWEEP_TIME_LIMIT = 600


@shared_task(
    name="billing.tally_session",
    ignore_result=True,
    soft_time_limit=TIME_LIMIT - 10,
    time_limit=TIME_LIMIT,
)
def tally_session(session_id: int) -> int:
    """Fold a finished session's usage into the daily totals."""
    return services.tally_session(session_id=session_id)


@shared_task(
    name="billing.tally_sweep",
    ignore_result=True,
    soft_time_limit=TIME_LIMIT - 10,
    time_limit=TIME_LIMIT,
)
def tally_sweep() -> int:
    """Beat, every minute: recompute every day with usage not yet tallied."""
    return services.tally_sweep()


@shared_task(
    name="billing.invoices_close_previous_month",
    ignore_result=True,
    soft_time_limit=SWEEP_TIME_LIMIT - 30,
    time_limit=SWEEP_TIME_LIMIT,
)
def invoices_close_previous_month() -> dict[str, int]:
    """Beat, hourly: issue last month's invoices (a no-op once they are issued)."""
    return services.invoices_close_previous_month()


def enqueue_session_tally(session_id: int) -> None:
    """Queue the tally of a session once the current transaction commits (at once outside one).

    Never raises: losing this message (broker down at that moment) costs only latency, since the
    beat sweep picks the events up within a minute.
    """

    def send() -> None:
        try:
            tally_session.delay(session_id)
        except Exception:
            logger.warning("could not queue the tally of session %s; the sweep will", session_id)

    transaction.on_commit(send)


@shared_task(
    name="billing.budget_alerts_check",
    ignore_result=True,
    soft_time_limit=TIME_LIMIT - 10,
    time_limit=TIME_LIMIT,
)
def budget_alerts_check(tenant_id: int) -> int:
    """A tenant's budget alerts, checked now (after its budget changed)."""
    return len(budgets.budget_alerts_check(tenant_id=tenant_id))


def enqueue_budget_alerts_check(tenant_id: int) -> None:
    """Queue the check once the current transaction commits; never raises (the next tally
    checks again)."""

    def send() -> None:
        try:
            budget_alerts_check.delay(tenant_id)
        except Exception:
            logger.warning("could not queue the budget alert check of tenant %s", tenant_id)

    transaction.on_commit(send)
