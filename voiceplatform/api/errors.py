"""Every failure of the REST API as one JSON shape (``tenants.errors``), 500s included."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from tenants.errors import error_body

logger = logging.getLogger(__name__)

CODES_BY_STATUS = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "insufficient_scope",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
}


class ErrorDetail(Schema):
    type: str
    code: str
    message: str
    param: str | None


class ErrorOut(Schema):
    error: ErrorDetail


class ApiError(Exception):
    """Raised anywhere under a view: answered as ``status`` with the error shape."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, param: str | None = None) -> JsonResponse:
    return JsonResponse(error_body(status, code, message, param), status=status)


def not_found(what: str) -> ApiError:
    # "Missing" and "another tenant's" answer the same.
    return ApiError(404, f"{what}_not_found", f"No such {what.replace('_', ' ')}.")


def from_django_validation(error: DjangoValidationError) -> ApiError:
    """A model or service validation error: the first field named becomes ``param``."""
    if hasattr(error, "error_dict"):
        field, messages = next(iter(error.message_dict.items()))
        param = None if field == "__all__" else field
        text = " ".join(messages)
        return ApiError(400, "invalid_value", f"{field}: {text}" if param else text, param=param)
    return ApiError(400, "invalid_value", " ".join(error.messages))


def _param_of(location: list[Any] | tuple[Any, ...]) -> tuple[str, str | None]:
    """ninja's ``loc`` ("body", "<argument>", field, …) → (where, dotted field)."""
    where = str(location[0]) if location else "body"
    rest = [str(part) for part in location[1:]]
    if where == "body" and rest:
        rest = rest[1:]  # the view argument's name, not part of the client's JSON
    return where, ".".join(rest) or None


def install(api: NinjaAPI) -> None:
    @api.exception_handler(ApiError)
    def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
        response = error_response(exc.status, exc.code, exc.message, exc.param)
        for name, value in exc.headers.items():
            response[name] = value
        return response

    @api.exception_handler(NinjaValidationError)
    def _validation(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
        first = exc.errors[0] if exc.errors else {}
        where, param = _param_of(first.get("loc", ()))
        message = str(first.get("msg", "invalid value"))
        if param:
            message = f"{param} ({where}): {message}"
        elif where == "body":
            message = f"The JSON body is not valid: {message}"
        return error_response(400, "invalid_value", message, param)

    @api.exception_handler(AuthenticationError)
    def _unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = error_response(
            401, "invalid_api_key",
            "Send a valid API key as 'Authorization: Bearer vp_live_…'.",
        )  # fmt: skip
        response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response

    @api.exception_handler(DjangoValidationError)
    def _django_validation(request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
        return _api_error(request, from_django_validation(exc))

    @api.exception_handler(Http404)
    def _http404(request: HttpRequest, exc: Http404) -> HttpResponse:
        return error_response(404, "not_found", "No such resource.")

    @api.exception_handler(ObjectDoesNotExist)
    def _does_not_exist(request: HttpRequest, exc: ObjectDoesNotExist) -> HttpResponse:
        return error_response(404, "not_found", "No such resource.")

    @api.exception_handler(HttpError)
    def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        status = exc.status_code
        code = CODES_BY_STATUS.get(status, "error")
        message = str(exc)
        if status == 400 and "parse" in message.lower():
            code, message = "invalid_json", "The request body is not valid JSON."
        return error_response(status, code, message)

    @api.exception_handler(Exception)
    def _unexpected(request: HttpRequest, exc: Exception) -> HttpResponse:
        logger.exception("REST API %s %s failed", request.method, request.path)
        return error_response(500, "internal_error", "Something went wrong on our side.")


@csrf_exempt
def unknown_path(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any other path under /api/v1/: the JSON 404, not the console's HTML page."""
    return error_response(404, "unknown_path", f"No API endpoint at {request.path}.")
