from __future__ import annotations

from celery import shared_task

from agents import services, webhooks
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
