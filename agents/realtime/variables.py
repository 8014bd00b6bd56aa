"""Prompt variables: ``{{customer_name}}`` placeholders in instructions and first messages.

Values come from outside the tenant's console (a widget page's ``data-*`` attributes, an API
socket's query, a phone call's parameters), so they are data, never instructions:

* only the names the agent declares are taken (``allowed``: name → the admin's default);
* a value is cut to ``MAX_VALUE_CHARS``, control characters are removed and any run of
  whitespace (newlines included) becomes one space, so a value cannot open a new line or
  section of the instructions;
* the substitution is one pass over the admin's template: a value that itself contains
  ``{{other}}`` or ``}}`` is inserted as text and never expanded again;
* a placeholder the agent does not declare is left as typed (the console refuses to save one).

Plain Python (no Django): the relay, the local engine's tests and the console share it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping

MAX_VALUE_CHARS = 200
MAX_VARIABLES = 20
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# The prefix of a variable in an API socket's query (``?var_customer_name=Ada``) and in a phone
# call's stream parameters.
QUERY_PREFIX = "var_"


def value_clean(value: object) -> str:
    """A caller-supplied value as it may enter the instructions ("" when it is not text)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    text = "".join(
        " " if char.isspace() else char
        for char in str(value)
        if char.isspace() or unicodedata.category(char) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    )
    return " ".join(text.split())[:MAX_VALUE_CHARS].strip()


def name_from_attribute(attribute: str) -> str:
    """A widget ``data-customer-name`` (or ``customerName``) attribute's variable name."""
    name = re.sub(r"(?<!^)([A-Z])", r"_\1", attribute).lower().replace("-", "_")
    return name


def variables_collect(
    raw: Mapping[str, object] | None, *, allowed: Iterable[str]
) -> dict[str, str]:
    """The allow-listed, cleaned values of ``raw`` (unknown names and empty values dropped)."""
    if not isinstance(raw, Mapping):
        return {}
    names = frozenset(allowed)
    values: dict[str, str] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or key not in names:
            continue
        cleaned = value_clean(value)
        if cleaned:
            values[key] = cleaned
    return values


def variables_from_query(query: Mapping[str, str], *, allowed: Iterable[str]) -> dict[str, str]:
    """``var_<name>=value`` pairs of a query string (or a call's stream parameters)."""
    raw = {
        key[len(QUERY_PREFIX) :]: value
        for key, value in query.items()
        if key.startswith(QUERY_PREFIX)
    }
    return variables_collect(raw, allowed=allowed)


def placeholders(template: str) -> list[str]:
    """The variable names a template uses, in order of first use."""
    seen: dict[str, None] = {}
    for match in PLACEHOLDER.finditer(template or ""):
        seen.setdefault(match.group(1), None)
    return list(seen)


def template_fill(template: str, *, values: Mapping[str, str], defaults: Mapping[str, str]) -> str:
    """``template`` with each declared placeholder replaced by its value, else its default.

    One pass: what a value contains is never read as a placeholder.
    """
    if not template or "{{" not in template:
        return template

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in defaults:
            return match.group(0)
        return values.get(name) or defaults.get(name) or ""

    return PLACEHOLDER.sub(replace, template)
