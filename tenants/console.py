"""The console's one door: every tenant page runs through ``tenant_view``.

It resolves the membership from the URL's tenant slug (404 when missing or not yours), checks the
role, and runs the view inside the tenant's scope, so that every query in it is tenant-filtered.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from tenants.access import membership_get_for_user
from tenants.scoping import tenant_scope

View = Callable[..., HttpResponse]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def tenant_view(
    *, configure: bool = False, configure_changes: bool = False, finance: bool = False
) -> Callable[[View], View]:
    """Decorate a console view taking ``tenant_slug``: the one place roles are checked.

    ``configure``: owner/admin only. ``configure_changes``: every member may read, only
    owners/admins may change (POST). ``finance``: owner/finance only. Other members get 403;
    non-members get 404.
    """

    def decorator(view: View) -> View:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, tenant_slug: str, *args: Any, **kwargs: Any) -> Any:
            membership = membership_get_for_user(user=request.user, tenant_slug=tenant_slug)
            changing = request.method not in SAFE_METHODS
            if (configure or (configure_changes and changing)) and not membership.can_configure:
                raise PermissionDenied("Only owners and admins can change this.")
            if finance and not membership.can_see_finance:
                raise PermissionDenied("Only owners and finance members can see this.")
            request.tenant = membership.tenant
            request.membership = membership
            request.session["vp_last_tenant"] = membership.tenant.slug
            with tenant_scope(membership.tenant):
                return view(request, *args, **kwargs)

        return wrapper

    return decorator
