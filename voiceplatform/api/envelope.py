"""What every REST API request passes through around django-ninja's own handling.

* a body that is not JSON (``Content-Type``) is a 415, one over Django's upload limit a 413,
  before anything runs;
* a POST with ``Idempotency-Key`` is answered once (``tenants.idempotency``): a retry gets the
  stored answer (with ``Idempotent-Replayed: true``), another request under the same key a 422,
  a retry while the first still runs a 409;
* ninja's plain-text 405 becomes the API's JSON error shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponseNotAllowed
from django.http.response import HttpResponseBase

from tenants import idempotency
from voiceplatform.api.errors import error_response

View = Callable[..., HttpResponseBase]
BODY_METHODS = ("POST", "PUT", "PATCH")


def envelope(view: View) -> View:
    idempotent_view = idempotency.idempotent(view)

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            has_body = request.method in BODY_METHODS and bool(request.body)
        except RequestDataTooBig:
            return error_response(
                413, "request_too_large",
                f"The body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            )  # fmt: skip
        if has_body:
            media_type = request.content_type or ""
            if media_type != "application/json" and not media_type.endswith("+json"):
                return error_response(
                    415, "unsupported_media_type",
                    "Send the body as JSON with 'Content-Type: application/json'.",
                )  # fmt: skip
        response = idempotent_view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = response["Allow"]
            response = error_response(
                405, "method_not_allowed", f"{request.method} is not allowed here; use {allowed}."
            )
            response["Allow"] = allowed
        return response

    return wrapped
