from __future__ import annotations

from celery import shared_task

from agents import services


@shared_task(name="agents.sessions_sweep_abandoned", ignore_result=True)
def sessions_sweep_abandoned() -> int:
    """End sessions whose process died without recording it (beat, every minute)."""
    return services.sessions_sweep_abandoned()
