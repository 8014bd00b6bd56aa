"""Readable renderings of stored structures for console pages: an audit event's changes and a
version diff as ``field: before → after`` lines, never a raw Python dict."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import template

register = template.Library()

MISSING = "—"
# Keys that name an item of a list of objects (tools by name, MCP servers by label).
ITEM_KEYS = ("name", "label", "id")


@dataclass(frozen=True)
class Line:
    """One readable change: ``field`` (a dotted path; "" for the event's whole value), and
    either a ``before``/``after`` pair or a single ``value``."""

    field: str
    before: str = ""
    after: str = ""
    value: str = ""
    is_change: bool = False


def scalar(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple) and all(not isinstance(v, dict | list) for v in value):
        return ", ".join(scalar(v) for v in value)
    return str(value)


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts and lists of objects as ``a.b`` / ``tools[lookup].timeout`` → leaf text."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        out = {}
        for index, item in enumerate(value):
            key = next((k for k in ITEM_KEYS if item.get(k) not in (None, "")), None)
            tag = str(item[key]) if key else str(index + 1)
            rest = {k: v for k, v in item.items() if k != key}
            out.update(flatten(rest, f"{prefix}[{tag}]") if rest else {f"{prefix}[{tag}]": tag})
        return out
    return {prefix: scalar(value)}


def pair_lines(field: str, before: Any, after: Any) -> list[Line]:
    old, new = flatten(before, field), flatten(after, field)
    names = list(old) + [name for name in new if name not in old]
    return [
        Line(
            field=name, before=old.get(name, MISSING), after=new.get(name, MISSING), is_change=True
        )
        for name in names
        if old.get(name, MISSING) != new.get(name, MISSING)
    ]


def _is_pair(value: Any, action: str) -> bool:
    if isinstance(value, dict) and set(value) == {"from", "to"}:
        return True
    # The tenant's choice fields are audited as [previous, new] (tenants.services).
    return action.endswith("_policy_changed") and isinstance(value, list) and len(value) == 2


@register.filter
def change_lines(changes: Any, action: str = "") -> list[Line]:
    """An audit event's ``changes`` as lines: ``role: viewer → admin``, ``allowed_origins:
    https://a → https://a, https://b``, ``deleted.sessions.deleted: 3``."""
    if not isinstance(changes, dict) or not changes:
        return [] if not changes else [Line(field="", value=scalar(changes))]
    if set(changes) == {"from", "to"}:
        return pair_lines("", changes["from"], changes["to"])
    lines: list[Line] = []
    rest = dict(changes)
    if "from" in rest and len(rest) == 2:  # {"role": new, "from": old} (membership changes)
        before = rest.pop("from")
        ((field, after),) = rest.items()
        return pair_lines(field, before, after)
    for field, value in rest.items():
        if _is_pair(value, action):
            before, after = (value["from"], value["to"]) if isinstance(value, dict) else value
            lines.extend(pair_lines(field, before, after))
        else:
            lines.extend(
                Line(field=name, value=text) for name, text in flatten(value, field).items()
            )
    return lines


@register.filter
def diff_lines(diff: dict[str, tuple[Any, Any]] | None) -> list[Line]:
    """A version diff (``configuration.config_diff``: field → (old, new)) as one line per
    changed leaf: ``tools[lookup_order].timeout_seconds: 10 → 20``."""
    lines: list[Line] = []
    for field, (before, after) in (diff or {}).items():
        lines.extend(pair_lines(field, before, after))
    return lines
