"""The audit trail: one call from each service that changes tenant configuration."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import models

from tenants.models import AuditEvent, Tenant
from tenants.scoping import tenant_scope


def audit_record(
    *,
    tenant: Tenant | int,
    actor: AbstractBaseUser | None,
    action: str,
    target: models.Model | None = None,
    target_type: str = "",
    target_label: str = "",
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    with tenant_scope(tenant_id):
        return AuditEvent.objects.create(
            tenant_id=tenant_id,
            actor=actor if actor is not None and actor.is_authenticated else None,
            action=action,
            target_type=target_type or (target._meta.model_name if target is not None else ""),
            target_id=str(target.pk) if target is not None else "",
            target_label=(target_label or (str(target) if target is not None else ""))[:200],
            changes=changes or {},
        )
