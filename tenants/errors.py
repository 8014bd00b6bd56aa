"""The one JSON shape of every HTTP error the platform answers to a program.

``{"error": {"type", "code", "message", "param"}}`` as Stripe and OpenAI answer: ``type`` is
the family a client branches on, ``code`` the precise reason, ``param`` the offending field
(or null). The REST API (``voiceplatform.api``) and the realtime HTTP doors (``agents.views``)
both answer with it, so a tenant's backend parses one shape.
"""

from __future__ import annotations

from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    if status >= 500:
        return "api_error"
    return ERROR_TYPES.get(status, "invalid_request_error")


def error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {
        "error": {
            "type": error_type_for(status),
            "code": code,
            "message": message,
            "param": param,
        }
    }
