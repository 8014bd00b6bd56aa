from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from agents import analysis, services, webhooks
from agents.compaction import summary_refresh
from tenants.tasks import TenantTask


@shared_task(name="agents.sessions_sweep_abandoned", ignore_result=True)
def sessions_sweep_abandoned() -> int:
    """End sessions whose process died without recording it, at their last heartbeat (beat,
    every ``VP_SESSION_HEARTBEAT_SECONDS``)."""
    return services.sessions_sweep_abandoned()


@shared_task(
    base=TenantTask,
    name="agents.session_summarize",
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def session_summarize(session_id: int, tenant_id: int) -> None:
    """Keep the session's rolling summary current (enqueued every few transcript items)."""
    summary_refresh(session_id=session_id, tenant_id=tenant_id)


@shared_task(
    base=TenantTask,
    name="agents.session_analyze",
    ignore_result=True,
    soft_time_limit=90,
    time_limit=100,  # under analysis.CLAIM_SECONDS: an older claim is a dead worker's
    # Database trouble, or another worker running the same run: later (at most 2 min out, far
    # under the broker's visibility timeout). A model failure is not retried: it falls back.
    autoretry_for=(OperationalError, InterfaceError, analysis.AnalysisBusy),
    retry_backoff=5,
    retry_backoff_max=120,
    max_retries=8,
)
def session_analyze(session_id: int, tenant_id: int) -> None:
    """Post-call analysis of an ended session (queued on commit when it ends; idempotent)."""
    analysis.session_analyze(session_id=session_id, tenant_id=tenant_id)


@shared_task(name="agents.analyses_sweep_pending", ignore_result=True, time_limit=60)
def analyses_sweep_pending() -> int:
    """Beat: queue again the analyses a broker outage or a lost worker left pending."""
    return analysis.analyses_sweep_pending()


@shared_task(
    base=TenantTask,
    name="agents.webhook_deliver",
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def webhook_deliver(delivery_id: int, tenant_id: int) -> None:
    """One attempt of a tenant webhook delivery, if it is due and nobody else has it (a
    duplicate message, or one redelivered after a worker died, finds it claimed or done)."""
    webhooks.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="agents.webhook_deliveries_sweep", ignore_result=True)
def webhook_deliveries_sweep() -> int:
    """Queue the webhook deliveries that are due and not in flight (beat, every 30 s)."""
    return webhooks.deliveries_sweep()


@shared_task(
    name="agents.retention_sweep",
    ignore_result=True,
    soft_time_limit=280,
    time_limit=300,
)
def retention_sweep() -> int:
    """Delete conversation content past each tenant's retention windows (beat, hourly; bounded
    batches and a time budget; safe to run twice at once). The number of tenants swept."""
    from agents.retention import retention_sweep as sweep  # retention imports agents.recording

    return len(sweep())
