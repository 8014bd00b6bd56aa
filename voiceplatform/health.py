"""``/healthz``: is the database reachable, and when did a Celery worker last run a task?"""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from tenants.models import WorkerHeartbeat


def healthz(request: HttpRequest) -> JsonResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        heartbeat = WorkerHeartbeat.objects.filter(name="worker").first()
    except Exception:  # noqa: BLE001 - any database failure means "not healthy"
        return JsonResponse({"database": "unreachable"}, status=503)
    age = (timezone.now() - heartbeat.seen_at).total_seconds() if heartbeat else None
    return JsonResponse({"database": "ok", "worker_heartbeat_age_seconds": age})
