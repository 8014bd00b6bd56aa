from __future__ import annotations

from django.http import HttpRequest

from tenants.access import memberships_for_user


def console(request: HttpRequest) -> dict:
    """The tenant switcher and the current tenant for the console layout."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "user_memberships": memberships_for_user(user=user),
        "current_tenant": getattr(request, "tenant", None),
        "current_membership": getattr(request, "membership", None),
    }
