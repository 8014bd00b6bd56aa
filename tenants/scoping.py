"""Fail-closed tenant scoping for every tenant-owned model.

A tenant-owned model's default manager (``objects``) refuses to build a query unless a tenant
scope is active, and inside one it only ever sees that tenant's rows::

    with tenant_scope(tenant):
        Agent.objects.get(pk=agent_id)     # another tenant's id raises DoesNotExist

The only bypass is explicit and greppable: ``with scopes_disabled(): ...`` (platform staff
views, Celery sweeps across tenants, management commands). The scope lives in a ``ContextVar``,
so it follows a request or a coroutine, including ``sync_to_async`` hops, and never leaks into
another one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from django.db import models

if TYPE_CHECKING:  # tenants.models imports this module: a type-only import breaks the cycle
    from tenants.models import Tenant


class ScopeError(Exception):
    """A tenant-owned model was queried outside any tenant scope."""


_DISABLED = object()
_active_scope: ContextVar[Any] = ContextVar("vp_tenant_scope", default=None)


@contextmanager
def tenant_scope(tenant: Tenant | int) -> Iterator[None]:
    """Run the block with ``tenant`` as the only visible tenant."""
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    if tenant_id is None:
        raise ScopeError("cannot scope to an unsaved tenant")
    token = _active_scope.set(tenant_id)
    try:
        yield
    finally:
        _active_scope.reset(token)


@contextmanager
def scopes_disabled() -> Iterator[None]:
    """The explicit bypass: every tenant's rows are visible inside the block."""
    token = _active_scope.set(_DISABLED)
    try:
        yield
    finally:
        _active_scope.reset(token)


def current_tenant_id() -> int | None:
    """The scoped tenant's id, or None when no scope (or the bypass) is active."""
    scope = _active_scope.get()
    return None if scope is _DISABLED else scope


class TenantScopedManager(models.Manager):
    """Default manager of tenant-owned models: filters by the active scope or refuses."""

    def get_queryset(self) -> models.QuerySet:
        scope = _active_scope.get()
        queryset = super().get_queryset()
        if scope is _DISABLED:
            return queryset
        if scope is None:
            raise ScopeError(
                f"{self.model.__name__} queried outside a tenant scope; use tenant_scope(tenant) "
                "or, deliberately, scopes_disabled()"
            )
        return queryset.filter(tenant_id=scope)


class TenantOwnedModel(models.Model):
    """Base of every tenant-owned table: a non-null tenant and the fail-closed manager.

    ``unscoped`` is the bypass manager for code that holds no request (admin, migrations);
    prefer ``scopes_disabled()`` so that the bypass shows where it happens.
    """

    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+")

    objects = TenantScopedManager()
    unscoped = models.Manager()  # noqa: DJ012 - a manager, not a field

    class Meta:
        abstract = True
        base_manager_name = "unscoped"

    def save(self, *args: Any, **kwargs: Any) -> None:
        scope = _active_scope.get()
        if scope is not None and scope is not _DISABLED and self.tenant_id != scope:
            raise ScopeError(
                f"cannot save a {type(self).__name__} of tenant {self.tenant_id} "
                f"inside the scope of tenant {scope}"
            )
        super().save(*args, **kwargs)
