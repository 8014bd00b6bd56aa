"""Who calls: a tenant's platform API key (``Authorization: Bearer vp_live_…``), its scope and
its rate."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja.security import HttpBearer

from tenants.models import ApiKey
from tenants.ratelimits import first_limited
from tenants.services import api_key_authenticate
from voiceplatform.api.errors import ApiError


class ApiKeyAuth(HttpBearer):
    """A platform API key holding ``scope``; counted against the key's rate (VP_API_RATE).

    A missing, unknown or revoked key is a 401, a key without the scope a 403 and a key over
    its rate a 429 with ``Retry-After``. The key acts for its own tenant only: every view reads
    ``request.auth.tenant`` and queries inside its ``tenant_scope``.
    """

    def __init__(self, scope: str) -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        api_key = api_key_authenticate(token.strip())
        if api_key is None:
            return None
        limited = first_limited(
            request,
            group="api",
            # Counted by the key's hash (never reused, unlike an id in a rolled-back database).
            checks=[("key", lambda group, request: api_key.hashed_key, settings.VP_API_RATE)],
        )
        if limited is not None:
            raise ApiError(
                429, "rate_limited",
                f"Too many requests with this API key; try again in {limited.retry_after_s} s.",
                headers={"Retry-After": str(limited.retry_after_s)},
            )  # fmt: skip
        if not api_key.has_scope(self.scope):
            raise ApiError(403, "insufficient_scope", f"This API key lacks the {self.scope} scope.")
        return api_key


READ = ApiKeyAuth("read")
WRITE = ApiKeyAuth("write")


def caller(request: HttpRequest) -> ApiKey:
    api_key: Any = getattr(request, "auth", None)
    assert isinstance(api_key, ApiKey)
    return api_key
