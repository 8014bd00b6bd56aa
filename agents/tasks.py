from __future__ import annotations

from celery import shared_task

from agents import services
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
