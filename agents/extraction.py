"""The data schema of post-call analysis: checking it, asking a model for it, and the rules.

No Django here (as ``agents.summarizer``): the analysis service loads and stores.

* ``data_schema_check``: what an admin may define (a JSON Schema whose top level is an object).
* ``model_output_schema``: the ``text.format`` schema sent to the Responses API. Strict
  structured outputs want every property required and ``additionalProperties: false`` at every
  object level; the admin's optional properties become nullable instead, and
  ``data_from_model`` drops those nulls again, so the result is validated against the admin's
  own schema (``validation_problem``) whatever the model did.
* ``extract_by_rules``: the offline fallback. Finds values in the transcript by each top-level
  property's name and type (ids and numbers after their name, e-mail addresses, phone numbers,
  enum values, booleans like ``resolved`` from how the conversation ended, strings after
  "my X is"). Every value it returns passed its property's own schema; the caller marks them
  as rule-extracted.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jsonschema import FormatChecker, SchemaError
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from agents.summarizer import Turn

PROPERTY_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_PROPERTIES = 50


class SchemaProblem(ValueError):
    """The admin's data schema cannot be used; the message says why, for a form error."""


def data_schema_check(schema: Any) -> None:
    """Raise ``SchemaProblem`` unless ``schema`` is a usable data schema ({} means none)."""
    if schema in (None, {}):
        return
    if not isinstance(schema, dict):
        raise SchemaProblem('The data schema must be a JSON object, e.g. {"type": "object", …}.')
    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as error:
        raise SchemaProblem(f"Not a valid JSON Schema: {error.message}") from None
    if schema.get("type") != "object":
        raise SchemaProblem('The data schema\'s top level must be {"type": "object"}.')
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise SchemaProblem('Name at least one property under "properties".')
    if len(properties) > MAX_PROPERTIES:
        raise SchemaProblem(f"At most {MAX_PROPERTIES} properties.")
    bad = [name for name in properties if not PROPERTY_NAME.match(name)]
    if bad:
        raise SchemaProblem(
            f"Property names use letters, digits and _ (starting with a letter): {', '.join(bad)}"
        )
    missing = [name for name in schema.get("required", []) if name not in properties]
    if missing:
        raise SchemaProblem(f"Required but not defined under properties: {', '.join(missing)}")


# --- asking a model ---------------------------------------------------------------------


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if isinstance(kind, str):
        result = {**schema, "type": [kind, "null"]}
        if "enum" in result and None not in result["enum"]:
            result["enum"] = [*result["enum"], None]
        return result
    if isinstance(kind, list):
        return schema if "null" in kind else {**schema, "type": [*kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The admin's schema as strict structured outputs accept it (see the module docstring)."""
    result = copy.deepcopy(schema)
    if result.get("type") == "object" or "properties" in result:
        properties = result.get("properties") or {}
        required = set(result.get("required") or [])
        result["properties"] = {
            name: strict_schema(sub) if name in required else _nullable(strict_schema(sub))
            for name, sub in properties.items()
            if isinstance(sub, dict)
        }
        result["required"] = list(result["properties"])
        result["additionalProperties"] = False
    if isinstance(result.get("items"), dict):
        result["items"] = strict_schema(result["items"])
    for keyword in ("anyOf", "oneOf", "allOf"):
        if isinstance(result.get(keyword), list):
            result[keyword] = [strict_schema(sub) for sub in result[keyword]]
    result.pop("$schema", None)
    return result


def model_output_schema(*, rubric: str, data_schema: dict[str, Any]) -> dict[str, Any]:
    """What the model answers: a summary, a verdict on the rubric (if any), the data (if any)."""
    properties: dict[str, Any] = {"summary": {"type": "string"}}
    if rubric.strip():
        properties["success"] = {
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": ["passed", "failed"]},
                "reason": {"type": "string"},
            },
            "required": ["verdict", "reason"],
            "additionalProperties": False,
        }
    if data_schema:
        properties["data"] = strict_schema(data_schema)
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _allows_null(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "null" or (isinstance(kind, list) and "null" in kind)


def data_from_model(value: Any, schema: dict[str, Any]) -> Any:
    """The model's data with the nulls strict mode forced on optional properties removed."""
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        properties = schema["properties"]
        result = {}
        for name, item in value.items():
            sub = properties.get(name)
            if sub is None:
                result[name] = item
            elif item is None and not _allows_null(sub):
                continue
            else:
                result[name] = data_from_model(item, sub)
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [data_from_model(item, schema["items"]) for item in value]
    return value


def validation_problem(data: Any, schema: dict[str, Any]) -> str:
    """The most relevant error of ``data`` against ``schema``, or an empty string. Formats
    (``email``, ``date``, …) are checked too: an admin who wrote one means it."""
    validator = validator_for(schema)(schema, format_checker=FormatChecker())
    error = best_match(validator.iter_errors(data))
    if error is None:
        return ""
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


# --- the rules ----------------------------------------------------------------------------

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ().-]{6,}\d(?!\w)")
_NUMBER = r"(-?\d[\d,]*(?:\.\d+)?)"
_IDENTIFIER = r"([A-Za-z0-9][A-Za-z0-9-]*\d[A-Za-z0-9-]*|\d[A-Za-z0-9-]*)"
_LINK = r"(?:\s+(?:number|no\.?|id|code|reference|is|was|it's|its|of|:|#))*\s*[:#]?\s*"
_SYNONYMS = {
    "issue": ("issue", "problem"),
    "problem": ("problem", "issue"),
    "name": ("name",),
    "reason": ("reason",),
}
_ID_SUFFIXES = ("_id", "_number", "_no", "_code", "_reference", "_ref")
_QUANTITY_SUFFIXES = ("_count", "_amount", "_total", "_quantity", "_qty")
# How a conversation that got its problem solved (or not) tends to end.
_SOLVED = re.compile(
    r"\b(that (?:fixed|solved|solves|resolved|helps|helped|works|worked)|(?:it|this) works"
    r"(?: now)?|problem solved|all sorted|sorted,? thanks|that's all i needed|"
    r"(?:is|are|has been|have been|was) (?:now )?(?:resolved|fixed|solved|refunded|sorted)|"
    r"perfect,? thank|great,? thank|thanks?,? that's (?:all|everything|great|perfect))",
    re.I,
)
_UNSOLVED = re.compile(
    r"\b(still (?:not|doesn't|does not|isn't|broken|waiting)|not (?:resolved|fixed|solved)|"
    r"(?:doesn't|does not|didn't|did not) (?:help|work)|unresolved|escalat\w*|"
    r"(?:can't|cannot|could not|couldn't|unable to) (?:help|fix|solve|resolve|find)|"
    r"call (?:you|me) back|follow up|open a ticket|not happy|useless)",
    re.I,
)
_SOLVED_NAMES = ("resolved", "solved", "fixed", "success", "successful", "completed",
                 "complete", "satisfied", "issue_resolved", "problem_solved")  # fmt: skip
END_TURNS = 4  # how far from the end a conversation's outcome is read


@dataclass
class RuleExtraction:
    data: dict[str, Any] = field(default_factory=dict)
    fields: list[str] = field(default_factory=list)  # names extracted by rules, in order


def _labels(name: str) -> list[str]:
    """Ways the property's name is said: order_id → "order id", "order number", "order"."""
    words = name.lower().replace("-", "_")
    spaced = words.replace("_", " ").strip()
    labels = [spaced]
    for suffix in _ID_SUFFIXES:
        if words.endswith(suffix) and len(words) > len(suffix):
            stem = words[: -len(suffix)].replace("_", " ")
            labels += [f"{stem} number", f"{stem} id", f"{stem} code", f"{stem} reference", stem]
    for suffix in _QUANTITY_SUFFIXES:
        if words.endswith(suffix) and len(words) > len(suffix):
            labels.append(words[: -len(suffix)].replace("_", " "))
    labels += [synonym for synonym in _SYNONYMS.get(words, ()) if synonym not in labels]
    return list(dict.fromkeys(labels))


def _ordered_texts(turns: Sequence[Turn]) -> list[str]:
    """User turns first (the caller says their own details), latest first (corrections win)."""
    users = [turn.text for turn in turns if turn.role == "user" and turn.text]
    others = [turn.text for turn in turns if turn.role != "user" and turn.text]
    return [*reversed(users), *reversed(others)]


def _first_match(pattern: re.Pattern[str], texts: Sequence[str]) -> str | None:
    for text in texts:
        matches = pattern.findall(text)
        if matches:
            last = matches[-1]
            return last if isinstance(last, str) else last[0]
    return None


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and "enum" in schema:
        return "enum"
    return kind or ""


def _enum_value(schema: dict[str, Any], texts: Sequence[str]) -> Any:
    values = [value for value in schema.get("enum", []) if isinstance(value, str) and value]
    best: tuple[int, Any] | None = None
    for rank, text in enumerate(texts):
        for value in values:
            spoken = re.escape(value.replace("_", " ")).replace(r"\ ", r"[\s_-]+")
            if re.search(rf"\b{spoken}\b", text, re.I):
                if best is None or rank < best[0]:
                    best = (rank, value)
        if best is not None:
            return best[1]
    return None


def _solved(turns: Sequence[Turn]) -> bool | None:
    """Whether the end of the conversation says the problem was solved (None: it does not)."""
    for turn in reversed([turn for turn in turns if turn.text][-END_TURNS:]):
        if _UNSOLVED.search(turn.text):
            return False
        if _SOLVED.search(turn.text):
            return True
    return None


def _boolean(name: str, turns: Sequence[Turn], texts: Sequence[str]) -> bool | None:
    lowered = name.lower()
    if lowered in _SOLVED_NAMES or lowered.endswith(("_resolved", "_solved", "_fixed")):
        return _solved(turns)
    for label in _labels(name):
        pattern = re.compile(
            rf"\b{re.escape(label)}\b\W*(?:is\s+|was\s+)?(yes|no|true|false)\b", re.I
        )
        found = _first_match(pattern, texts)
        if found is not None:
            return found.lower() in ("yes", "true")
    return None


def _after_label(name: str, value: str, texts: Sequence[str]) -> str | None:
    for label in _labels(name):
        spoken = re.escape(label).replace(r"\ ", r"\s+")
        pattern = re.compile(rf"\b{spoken}{_LINK}{value}", re.I)
        found = _first_match(pattern, texts)
        if found is not None:
            return found
    return None


def _before_label(name: str, texts: Sequence[str]) -> str | None:
    """A count said before its name: "3 items" for items_count."""
    for label in _labels(name):
        spoken = re.escape(label).replace(r"\ ", r"\s+")
        found = _first_match(re.compile(rf"{_NUMBER}\s+{spoken}\b", re.I), texts)
        if found is not None:
            return found
    return None


def _phrase_after_my(name: str, texts: Sequence[str]) -> str | None:
    for label in _labels(name):
        spoken = re.escape(label).replace(r"\ ", r"\s+")
        pattern = re.compile(
            rf"\b(?:my|the|our)\s+{spoken}\s+(?:is|was|are)\s+(?:that\s+)?([^.!?\n]{{2,200}})", re.I
        )
        found = _first_match(pattern, texts)
        if found is not None:
            return found.strip().rstrip(",;")
    return None


def _value_for(name: str, schema: dict[str, Any], turns: Sequence[Turn]) -> Any:
    texts = _ordered_texts(turns)
    kind = _type_of(schema)
    lowered = name.lower()
    if "enum" in schema:
        return _enum_value(schema, texts)
    if kind == "boolean":
        return _boolean(name, turns, texts)
    if kind in ("integer", "number"):
        found = _after_label(name, _NUMBER, texts) or _before_label(name, texts)
        if found is None:
            return None
        number = float(found.replace(",", ""))
        if kind == "integer":
            return int(number) if number.is_integer() else None
        return int(number) if number.is_integer() else number
    if kind != "string":
        return None
    if schema.get("format") == "email" or "email" in lowered or "e_mail" in lowered:
        return _first_match(_EMAIL, texts)
    if "phone" in lowered or schema.get("format") == "phone":
        found = _first_match(_PHONE, texts)
        return " ".join(found.split()) if found else None
    if lowered.endswith(_ID_SUFFIXES) or lowered in ("id", "reference", "code"):
        return _after_label(name, _IDENTIFIER, texts)
    return _phrase_after_my(name, texts)


def extract_by_rules(schema: dict[str, Any], turns: Sequence[Turn]) -> RuleExtraction:
    """Values of the schema's top-level properties found in the transcript by rules."""
    result = RuleExtraction()
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        value = _value_for(name, sub, turns)
        if value is None or validation_problem(value, sub):
            continue  # not found, or not what the property allows: omitted, never guessed
        result.data[name] = value
        result.fields.append(name)
    return result
