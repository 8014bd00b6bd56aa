"""A client's ``session.update`` checked against OpenAI's own session schemas.

The reference is the official SDK's typed models (``openai.types.realtime``): a field they do
not know is refused with ``unknown_parameter`` and a missing ``session.type`` with
``missing_required_parameter``, as OpenAI's server answers, instead of being passed on.
"""

from __future__ import annotations

from typing import Any

from openai import BaseModel
from openai.types.realtime import (
    RealtimeSessionCreateRequest,
    RealtimeTranscriptionSessionCreateRequest,
    RealtimeTranslationSessionUpdateRequest,
)
from pydantic import ValidationError

SCHEMAS: dict[str, type[BaseModel]] = {
    "realtime": RealtimeSessionCreateRequest,
    "transcription": RealtimeTranscriptionSessionCreateRequest,
    "translation": RealtimeTranslationSessionUpdateRequest,
}


# Names pydantic puts in an error location for the branch of a union it tried.
_BRANCHES = frozenset({"int", "str", "float", "bool", "list", "dict", "none"})


def _unknown_field(model: Any, path: str) -> str | None:
    """The dotted path of the first field the schema does not know, if any."""
    if isinstance(model, BaseModel):
        for name in model.model_extra or {}:
            return f"{path}.{name}"
        for name in type(model).model_fields:
            found = _unknown_field(getattr(model, name), f"{path}.{name}")
            if found:
                return found
    elif isinstance(model, list):
        for index, value in enumerate(model):
            found = _unknown_field(value, f"{path}[{index}]")
            if found:
                return found
    return None


def session_problem(session: Any, *, expected_type: str) -> tuple[str, str, str] | None:
    """(code, message, param) as OpenAI would answer a malformed ``session`` object, or None.

    ``expected_type`` is the session's own type; translation sessions carry none.
    """
    if not isinstance(session, dict):
        return ("invalid_value", "session must be an object", "session")
    if expected_type != "translation":
        session_type = session.get("type")
        if session_type is None:
            return (
                "missing_required_parameter",
                "Missing required parameter: 'session.type'.",
                "session.type",
            )
        if session_type != expected_type:
            return (
                "invalid_value",
                f"This session is a {expected_type} session; session.type must be "
                f"'{expected_type}'.",
                "session.type",
            )
    try:
        parsed = SCHEMAS[expected_type].model_validate(session)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(
            str(part)
            for part in first["loc"]
            if str(part) not in _BRANCHES and "[" not in str(part)
        )
        return (
            "invalid_value",
            f"Invalid value for 'session.{location}': {first['msg']}.",
            f"session.{location}",
        )
    unknown = _unknown_field(parsed, "session")
    if unknown:
        return ("unknown_parameter", f"Unknown parameter: '{unknown}'.", unknown)
    return None
