"""The doors to tenant data. "Missing" and "not yours" look the same: ``Http404``."""

from __future__ import annotations

from typing import TypeVar

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models
from django.http import Http404

from tenants.models import Membership
from tenants.scoping import ScopeError, current_tenant_id, scopes_disabled

ModelT = TypeVar("ModelT", bound=models.Model)


def membership_get_for_user(
    *, user: AbstractBaseUser | AnonymousUser, tenant_slug: str
) -> Membership:
    """The user's membership in the tenant named by ``tenant_slug``, or 404."""
    if not user.is_authenticated:
        raise Http404("No such tenant")
    # Deliberate bypass: memberships are what establishes the scope in the first place.
    with scopes_disabled():
        membership = (
            Membership.objects.select_related("tenant")
            .filter(user=user, tenant__slug=tenant_slug)
            .first()
        )
    if membership is None:
        raise Http404("No such tenant")
    return membership


def memberships_for_user(*, user: AbstractBaseUser | AnonymousUser) -> list[Membership]:
    if not user.is_authenticated:
        return []
    with scopes_disabled():
        return list(
            Membership.objects.select_related("tenant").filter(user=user).order_by("tenant__name")
        )


def tenant_object_get(model: type[ModelT], *, pk: object, **filters: object) -> ModelT:
    """One row of a tenant-owned model inside the active scope, or 404.

    Must run inside ``tenant_scope``: the scoped manager then filters by tenant, so another
    tenant's id is indistinguishable from a missing one.
    """
    if current_tenant_id() is None:
        raise ScopeError("tenant_object_get needs an active tenant scope")
    try:
        return model.objects.get(pk=pk, **filters)
    except (model.DoesNotExist, ValueError, TypeError):
        raise Http404(f"No such {model._meta.verbose_name}") from None
