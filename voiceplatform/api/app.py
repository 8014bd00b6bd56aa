"""The ``/api/v1/`` application: routers, errors, the envelope around every view."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import URLPattern, URLResolver
from ninja import NinjaAPI
from ninja.params.models import QueryModel

from voiceplatform.api import agents, billing, errors, sessions
from voiceplatform.api.envelope import envelope

DESCRIPTION = """
The tenant REST API. Authenticate with a platform API key from the console (API keys page)
as `Authorization: Bearer vp_live_…`; a key has scopes: `read` (GET), `write` (changes),
`realtime` (sockets and client secrets). A key acts for its own tenant: another tenant's ids
answer 404.

Every failure answers `{"error": {"type", "code", "message", "param"}}`. Every POST accepts an
`Idempotency-Key` header: a retry with the same key and body gets the first answer again (for 24
hours); the same key with another body is a 422. Requests per key are limited; over the limit
the answer is 429 with `Retry-After`.
"""


class PlatformApi(NinjaAPI):
    def _get_urls(self) -> list[URLPattern | URLResolver]:
        urls = super()._get_urls()
        for pattern in urls:
            if isinstance(pattern, URLPattern):
                pattern.callback = envelope(pattern.callback)
        for bound_router in self._get_bound_routers():
            for path_view in bound_router.path_operations.values():
                for operation in path_view.operations:
                    _refuse_unknown_query_parameters(operation)
        return urls


def _refuse_unknown_query_parameters(operation: Any) -> None:
    """A query parameter the operation does not know is a 400 naming it: a misspelt filter
    (``?chanel=phone``) must not silently answer every session."""
    known: set[str] = set()
    for model in operation.models:
        if issubclass(model, QueryModel):
            known.update(getattr(model, "__ninja_flatten_map__", None) or model.model_fields)
    run = operation.run

    def checked_run(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        unknown = sorted(set(request.GET) - known)
        if unknown:
            expected = ", ".join(sorted(known)) or "none"
            return errors.error_response(
                400, "unknown_parameter",
                f"Unknown query parameter {unknown[0]!r} (this endpoint takes: {expected}).",
                unknown[0],
            )  # fmt: skip
        return run(request, *args, **kwargs)

    operation.run = checked_run


api = PlatformApi(
    title="VoicePlatform API",
    version="1.0.0",
    description=DESCRIPTION,
    urls_namespace="api-v1",
    docs_url="/docs",
    openapi_url="/openapi.json",
)
errors.install(api)
api.add_router("", agents.router)
api.add_router("", agents.widget_router)
api.add_router("", sessions.router)
api.add_router("", billing.router)


def urls() -> Any:
    return api.urls
