from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from tenants.models import WorkerHeartbeat


@shared_task(name="tenants.worker_heartbeat", ignore_result=True)
def worker_heartbeat() -> None:
    """Scheduled by beat every minute: proves beat, broker, worker and database all work."""
    WorkerHeartbeat.objects.update_or_create(name="worker", defaults={"seen_at": timezone.now()})
