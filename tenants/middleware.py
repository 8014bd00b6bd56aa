"""The Django admin is platform staff's view across all tenants: the scoping bypass, visibly."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from tenants.scoping import scopes_disabled

ADMIN_PREFIX = "/admin/"


class StaffAdminUnscopedMiddleware:
    """Run admin requests with tenant scoping disabled (the admin checks staff status itself)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(ADMIN_PREFIX):
            with scopes_disabled():
                return self.get_response(request)
        return self.get_response(request)
