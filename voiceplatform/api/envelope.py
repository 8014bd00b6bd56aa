"""What every REST API request passes through around django-ninja's own handling.

* a body that is not JSON (``Content-Type``) is a 415 before anything runs;
* a POST with ``Idempotency-Key`` is answered once (``tenants.idempotency``): a retry gets the
  stored answer (with ``Idempotent-Replayed: true``), another request under the same key a 422,
  a retry while the first still runs a 409;
* ninja's plain-text 405 becomes the API's JSON error shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.http.response import HttpResponseBase

from tenants import idempotency
from tenants.services import api_key_authenticate
from voiceplatform.api.errors import error_response

View = Callable[..., HttpResponseBase]
BODY_METHODS = ("POST", "PUT", "PATCH")


def envelope(view: View) -> View:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method in BODY_METHODS and request.body:
            media_type = request.content_type or ""
            if media_type != "application/json" and not media_type.endswith("+json"):
                return error_response(
                    415, "unsupported_media_type",
                    "Send the body as JSON with 'Content-Type: application/json'.",
                )  # fmt: skip
        key = request.headers.get("Idempotency-Key")
        if request.method == "POST" and key is not None:
            response = _idempotent(view, request, key, args, kwargs)
        else:
            response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = response["Allow"]
            response = error_response(
                405, "method_not_allowed", f"{request.method} is not allowed here; use {allowed}."
            )
            response["Allow"] = allowed
        return response

    return wrapped


def _idempotent(
    view: View, request: HttpRequest, key: str, args: Any, kwargs: Any
) -> HttpResponseBase:
    if not key or len(key) > idempotency.MAX_KEY_LENGTH:
        return error_response(
            400, "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {idempotency.MAX_KEY_LENGTH} characters.",
            "Idempotency-Key",
        )  # fmt: skip
    scheme, _, raw_key = request.headers.get("Authorization", "").partition(" ")
    api_key = api_key_authenticate(raw_key.strip()) if scheme.lower() == "bearer" else None
    if api_key is None:  # no key, no record: the view answers 401
        return view(request, *args, **kwargs)
    fingerprint = idempotency.request_fingerprint(
        method=request.method or "",
        path=request.path,
        query=request.META.get("QUERY_STRING", ""),
        body=request.body,
    )
    try:
        replay = idempotency.idempotency_begin(api_key=api_key, key=key, fingerprint=fingerprint)
    except idempotency.KeyReused:
        return error_response(
            422, "idempotency_key_reused",
            "This Idempotency-Key was used with another request (method, path or body); "
            "use a new key for a new request.",
            "Idempotency-Key",
        )  # fmt: skip
    except idempotency.KeyInFlight:
        return error_response(
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
        idempotency.idempotency_abandon(api_key=api_key, key=key)
        raise
    body = response.content if isinstance(response, HttpResponse) else b""
    idempotency.idempotency_finish(
        api_key=api_key,
        key=key,
        status_code=response.status_code if isinstance(response, HttpResponse) else 500,
        content_type=response.get("Content-Type", ""),
        body=body,
    )
    return response
