"""Background work: the door for tasks of one tenant, and the worker heartbeat."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from celery import Task, shared_task
from django.utils import timezone

from tenants import idempotency
from tenants.models import Tenant, WorkerHeartbeat
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)


class TenantTask(Task):
    """The tasks' door (as pretix's ``EventTask``): a task of one tenant takes its id as the
    ``tenant_id`` argument; the tenant is loaded and the task runs inside its scope, so every
    query in it is tenant-filtered. A tenant that no longer exists ends the task quietly."""

    abstract = True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        bound = inspect.signature(self.run).bind(*args, **kwargs)
        tenant_id = bound.arguments["tenant_id"]
        if not Tenant.objects.filter(pk=tenant_id).exists():
            logger.warning("%s: tenant %s is gone; nothing to do", self.name, tenant_id)
            return None
        with tenant_scope(tenant_id):
            return super().__call__(*args, **kwargs)


@shared_task(name="tenants.worker_heartbeat", ignore_result=True)
def worker_heartbeat() -> None:
    """Scheduled by beat every minute: proves beat, broker, worker and database all work."""
    WorkerHeartbeat.objects.update_or_create(name="worker", defaults={"seen_at": timezone.now()})


@shared_task(name="tenants.idempotency_records_purge", ignore_result=True, time_limit=600)
def idempotency_records_purge() -> int:
    """Hourly: the REST API's stored Idempotency-Key answers past their 24 hours go."""
    return idempotency.idempotency_records_purge()
