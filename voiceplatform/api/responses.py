"""The answers every operation documents: its success and the error shape of every failure."""

from __future__ import annotations

from typing import Any

from voiceplatform.api.errors import ErrorOut

# What any operation may answer besides its success (the schema test holds the server to it).
ERROR_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 413, 415, 422, 429, 500})


def answers(schema: Any, *, status: int = 200) -> dict[Any, Any]:
    return {status: schema, ERROR_STATUSES: ErrorOut}
