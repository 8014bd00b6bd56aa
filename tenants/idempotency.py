"""Idempotency keys for the REST API's POSTs: one answer per (API key, Idempotency-Key).

A client that retries a POST (a timeout, a dropped connection) with the same
``Idempotency-Key`` gets the first answer again instead of creating a second agent or widget
key. The request is fingerprinted (method, path, query, body): the same key with another
request is refused, as is a retry that arrives while the first is still running. Only answers
of requests that ran are kept: authentication, scope and rate-limit refusals and server errors
are not, so a retry after them runs.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.utils import timezone

from tenants.errors import error_body
from tenants.models import ApiKey, IdempotencyRecord
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import api_key_authenticate

MAX_KEY_LENGTH = 255
# Refusals that mean "the request did not run": a retry must be free to run it.
NOT_STORED_STATUSES = frozenset({401, 403, 409, 429})


@dataclass(frozen=True)
class Replay:
    status_code: int
    content_type: str
    body: bytes


class KeyReused(Exception):
    """The key was used with another request (another method, path or body)."""


class KeyInFlight(Exception):
    """The first request with this key has not finished."""


def request_fingerprint(*, method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode()):
        digest.update(part + b"\0")
    digest.update(body)
    return digest.hexdigest()


def _fresh_since() -> datetime:
    return timezone.now() - timedelta(hours=settings.VP_API_IDEMPOTENCY_HOURS)


def idempotency_begin(*, api_key: ApiKey, key: str, fingerprint: str) -> Replay | None:
    """Claim ``key`` for this request, or the stored answer of its first run.

    None: the caller runs the request, then calls ``idempotency_finish`` (or
    ``idempotency_abandon``). Raises ``KeyReused`` or ``KeyInFlight``.
    """
    with tenant_scope(api_key.tenant_id):
        IdempotencyRecord.objects.filter(
            api_key=api_key, key=key, created_at__lt=_fresh_since()
        ).delete()
        try:
            with transaction.atomic():
                IdempotencyRecord.objects.create(
                    tenant_id=api_key.tenant_id, api_key=api_key, key=key,
                    request_hash=fingerprint,
                )  # fmt: skip
            return None
        except IntegrityError:
            record = IdempotencyRecord.objects.get(api_key=api_key, key=key)
    if record.request_hash != fingerprint:
        raise KeyReused
    if record.status_code is None:
        raise KeyInFlight
    return Replay(record.status_code, record.content_type, bytes(record.body))


def idempotency_finish(
    *, api_key: ApiKey, key: str, status_code: int, content_type: str, body: bytes
) -> None:
    """Store the answer (or forget the claim when the request did not really run)."""
    with tenant_scope(api_key.tenant_id):
        records = IdempotencyRecord.objects.filter(api_key=api_key, key=key, status_code=None)
        if status_code >= 500 or status_code in NOT_STORED_STATUSES:
            records.delete()
            return
        records.update(status_code=status_code, content_type=content_type, body=body)


def idempotency_abandon(*, api_key: ApiKey, key: str) -> None:
    with tenant_scope(api_key.tenant_id):
        IdempotencyRecord.objects.filter(api_key=api_key, key=key, status_code=None).delete()


def idempotency_records_purge() -> int:
    """Delete answers past their keeping time, across tenants (the hourly beat task)."""
    with scopes_disabled():
        deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=_fresh_since()).delete()
    return deleted


# --- the HTTP side: one decorator for every POST that takes an Idempotency-Key --------------

View = Callable[..., HttpResponseBase]


def _error(status: int, code: str, message: str, param: str | None = None) -> JsonResponse:
    return JsonResponse(error_body(status, code, message, param), status=status)


def idempotent(view: View) -> View:
    """Answer a POST carrying ``Idempotency-Key`` once per (API key, idempotency key).

    The API key is read from ``Authorization: Bearer``; without a valid one the view runs (and
    answers its 401). Used by the REST API's envelope and by ``POST /v1/realtime/client_secrets``.
    """

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or key is None:
            return view(request, *args, **kwargs)
        return _idempotent(view, request, key, args, kwargs)

    return wrapped


def _idempotent(
    view: View, request: HttpRequest, key: str, args: Any, kwargs: Any
) -> HttpResponseBase:
    if not key or len(key) > MAX_KEY_LENGTH:
        return _error(
            400, "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters.",
            "Idempotency-Key",
        )  # fmt: skip
    scheme, _, raw_key = request.headers.get("Authorization", "").partition(" ")
    api_key = api_key_authenticate(raw_key.strip()) if scheme.lower() == "bearer" else None
    if api_key is None:  # no key, no record: the view answers 401
        return view(request, *args, **kwargs)
    fingerprint = request_fingerprint(
        method=request.method or "",
        path=request.path,
        query=request.META.get("QUERY_STRING", ""),
        body=request.body,
    )
    try:
        replay = idempotency_begin(api_key=api_key, key=key, fingerprint=fingerprint)
    except KeyReused:
        return _error(
            422, "idempotency_key_reused",
            "This Idempotency-Key was used with another request (method, path or body); "
            "use a new key for a new request.",
            "Idempotency-Key",
        )  # fmt: skip
    except KeyInFlight:
        return _error(
            409, "idempotency_key_in_use",
            "A request with this Idempotency-Key is still running; retry when it has finished.",
            "Idempotency-Key",
        )  # fmt: skip
    if replay is not None:
        replayed = HttpResponse(replay.body, status=replay.status_code)
        replayed["Content-Type"] = replay.content_type
        replayed["Idempotent-Replayed"] = "true"
        return replayed
    try:
        response = view(request, *args, **kwargs)
    except BaseException:
        idempotency_abandon(api_key=api_key, key=key)
        raise
    body = response.content if isinstance(response, HttpResponse) else b""
    idempotency_finish(
        api_key=api_key,
        key=key,
        status_code=response.status_code if isinstance(response, HttpResponse) else 500,
        content_type=response.get("Content-Type", ""),
        body=body,
    )
    return response
