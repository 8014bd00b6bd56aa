"""The local engine's deterministic responder. It is NOT an AI.

It decides, from the conversation and the session configuration, what the assistant says,
in a fixed and predictable way so that tests and offline demos can rely on it:

* conversation ending with a tool result (a ``function_call_output``, or an ``mcp_call``
  that has an ``output`` or ``error``) -> one sentence per tool result since the last
  message item, in the order of the calls: "The <tool words> tool returned: <output>."
  (function), "The <tool words> tool on <server label> returned: <output>." (MCP), and
  "The <tool words> tool failed: <message>." when the output is a JSON object with an
  ``error`` key (or the MCP call has an ``error``). Calls without an output yet are skipped.
* last user turn names configured tools (tool name with ``_``/camelCase read as words,
  matched against the user's words with spaces and punctuation ignored, so tool
  ``lookup_order`` matches "look up order" and "lookup order"; overlapping matches keep the
  longest name) and ``tool_choice`` is not "none" -> one call per named tool, in the order
  they were said (parallel calls): a ``function_call`` for a function tool, an ``mcp_call``
  for a tool of an MCP server's ``allowed_tools``. Arguments map the digits heard (digits
  or number words, e.g. "one two three" -> "123") to the tool's first string or integer
  parameter, otherwise ``{}``; with several tools named, each tool gets the digits said
  from its name up to the next tool's name (the first one also those said before it).
  MCP tools have no known schema here: their digits go to ``{"query": "<digits>"}``.
  ``tool_choice`` naming a function (or an MCP server/tool) forces that one call;
  "required" forces a tool (the matched ones, else the first function tool, else the
  first MCP tool).
* user turn with an image -> "I see an image." (+ "You said: ..." if there was text)
* user turn with words -> "You said: <words>."
* no user turn yet -> the instructions' ``Greeting:`` line if any, else
  "Hello, how can I help you?"
* a user turn with nothing recognisable -> "Sorry, I did not catch that."
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

NUMBER_WORDS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "to": "2",
    "too": "2",
    "three": "3",
    "four": "4",
    "for": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}
# Homophones only count next to real numbers ("look up order one two three" vs "to the").
_HOMOPHONES = {"oh", "to", "too", "for"}


@dataclass
class ToolCall:
    """One tool call: ``kind`` "function" or "mcp" (then ``server_label`` is set)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    kind: str = "function"
    server_label: str | None = None


@dataclass
class Reply:
    """What the assistant does: speak ``text``, or make the tool ``calls`` (in order).

    ``function_name``/``arguments`` mirror the first function call (kept for callers that
    handle a single call)."""

    text: str = ""
    function_name: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    calls: list[ToolCall] = field(default_factory=list)


def tool_words(name: str) -> str:
    """``lookup_order`` / ``lookupOrder`` -> "lookup order"."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return " ".join(spaced.lower().split())


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def digits_heard(text: str) -> str:
    """Digits in ``text``, from numerals and spoken number words, in order."""
    words = re.findall(r"[a-z]+|\d+", text.lower())
    out: list[str] = []
    for i, word in enumerate(words):
        if word.isdigit():
            out.append(word)
        elif word in NUMBER_WORDS:
            if word in _HOMOPHONES:
                neighbours = words[max(0, i - 1) : i] + words[i + 1 : i + 2]
                if not any(
                    n.isdigit() or (n in NUMBER_WORDS and n not in _HOMOPHONES) for n in neighbours
                ):
                    continue
            out.append(NUMBER_WORDS[word])
    return "".join(out)


def _function_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [t for t in tools or [] if t.get("type", "function") == "function" and t.get("name")]


def mcp_tool_names(tool: dict[str, Any]) -> list[str]:
    """The tool names an MCP tool config allows (``allowed_tools`` list or filter)."""
    allowed = tool.get("allowed_tools")
    if isinstance(allowed, dict):
        allowed = allowed.get("tool_names")
    if not isinstance(allowed, list):
        return []
    return [name for name in allowed if isinstance(name, str) and name]


def _candidates(tools: list[dict[str, Any]]) -> list[tuple[dict[str, Any], ToolCall]]:
    """(tool config, call template) for every callable tool: functions first, then MCP."""
    out: list[tuple[dict[str, Any], ToolCall]] = [
        (tool, ToolCall(name=tool["name"])) for tool in _function_tools(tools)
    ]
    for tool in tools or []:
        if tool.get("type") == "mcp" and tool.get("server_label"):
            for name in mcp_tool_names(tool):
                call = ToolCall(name=name, kind="mcp", server_label=tool["server_label"])
                out.append((tool, call))
    return out


def _word_spans(text: str) -> tuple[str, list[int]]:
    """The squashed text and, per squashed character, the index of the word it came from."""
    squashed: list[str] = []
    owner: list[int] = []
    for index, word in enumerate(text.split()):
        for ch in _squash(word):
            squashed.append(ch)
            owner.append(index)
    return "".join(squashed), owner


def match_tools(
    text: str, candidates: list[tuple[dict[str, Any], ToolCall]]
) -> list[tuple[dict[str, Any], ToolCall, str]]:
    """The tools the user named, in the order said, each with the text that belongs to it.

    Longer names win where matches overlap ("check weather" inside "check weather radar");
    a tool named twice is called once."""
    heard, owner = _word_spans(text)
    found: list[tuple[int, int, int]] = []  # (start, end, candidate index)
    for index, (_, call) in enumerate(candidates):
        key = _squash(call.name)
        if not key:
            continue
        start = heard.find(key)
        while start != -1:
            found.append((start, start + len(key), index))
            start = heard.find(key, start + 1)
    found.sort(key=lambda f: (-(f[1] - f[0]), f[0]))
    taken: list[tuple[int, int, int]] = []
    seen: set[int] = set()
    for start, end, index in found:
        if index in seen or any(start < t_end and t_start < end for t_start, t_end, _ in taken):
            continue
        taken.append((start, end, index))
        seen.add(index)
    taken.sort()
    words = text.split()
    out = []
    for n, (start, _, index) in enumerate(taken):
        first_word = 0 if n == 0 else owner[start]
        last_word = owner[taken[n + 1][0]] if n + 1 < len(taken) else len(words)
        tool, call = candidates[index]
        out.append((tool, call, " ".join(words[first_word:last_word])))
    return out


def match_tool(text: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The function tool whose name the user said, preferring the longest name."""
    heard = _squash(text)
    best = None
    for tool in _function_tools(tools):
        key = _squash(tool["name"])
        if key and key in heard and (best is None or len(key) > len(_squash(best["name"]))):
            best = tool
    return best


def tool_arguments(tool: dict[str, Any], text: str) -> dict[str, Any]:
    """Digits heard -> the first string/integer parameter of ``tool``; else ``{}``."""
    digits = digits_heard(text)
    props = (tool.get("parameters") or {}).get("properties") or {}
    if not digits:
        return {}
    for name, schema in props.items():
        kind = schema.get("type") if isinstance(schema, dict) else None
        if kind == "integer" or kind == "number":
            return {name: int(digits)}
        if kind == "string":
            return {name: digits}
    return {}


def _output_error(output: Any) -> str | None:
    """The error message of a tool output that is a JSON object with an "error" key."""
    try:
        value = json.loads(output) if isinstance(output, str) else output
    except ValueError:
        return None
    if not isinstance(value, dict) or "error" not in value:
        return None
    error = value["error"]
    if isinstance(error, dict):
        error = error.get("message") or error.get("code") or json.dumps(error)
    text = " ".join(str(error).split()).rstrip(".")
    return text[:300] if text else "unknown error"


def _describe_output(output: str) -> str:
    try:
        value = json.loads(output)
    except (ValueError, TypeError):
        value = output
    if isinstance(value, dict):
        text = ", ".join(f"{tool_words(str(k))} {v}" for k, v in value.items())
    elif isinstance(value, list):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    text = " ".join(text.split())[:300].rstrip(".")
    return text if text else "nothing"


def _is_tool_result(item: dict[str, Any]) -> bool:
    if item.get("type") == "function_call_output":
        return True
    return item.get("type") == "mcp_call" and (
        item.get("output") is not None or item.get("error") is not None
    )


def tool_results_text(items: list[dict[str, Any]]) -> str:
    """The sentences for the tool results since the last message item (see module doc)."""
    start = len(items)
    while start > 0 and items[start - 1].get("type") != "message":
        start -= 1
    recent = items[start:]
    calls = {i.get("call_id"): i for i in reversed(items) if i.get("type") == "function_call"}
    results: list[tuple[int, str]] = []
    for position, item in enumerate(recent):
        if item.get("type") == "function_call_output":
            call = calls.get(item.get("call_id"))
            name = tool_words(call["name"]) if call and call.get("name") else "function"
            order = recent.index(call) if call in recent else position
            output = item.get("output", "")
            error = _output_error(output)
            if error is not None:
                results.append((order, f"The {name} tool failed: {error}."))
            else:
                results.append((order, f"The {name} tool returned: {_describe_output(output)}."))
        elif item.get("type") == "mcp_call" and _is_tool_result(item):
            name = tool_words(item.get("name") or "mcp")
            label = item.get("server_label") or "mcp"
            error = item.get("error")
            if error is not None:
                message = error.get("message") if isinstance(error, dict) else str(error)
                message = " ".join(str(message or "unknown error").split()).rstrip(".")
                results.append((position, f"The {name} tool on {label} failed: {message}."))
            else:
                output = _describe_output(item.get("output") or "")
                results.append((position, f"The {name} tool on {label} returned: {output}."))
    results.sort(key=lambda r: r[0])
    return " ".join(text for _, text in results)


def greeting(instructions: str | None) -> str:
    for line in (instructions or "").splitlines():
        if line.strip().lower().startswith("greeting:"):
            text = line.split(":", 1)[1].strip()
            if text:
                return text
    return "Hello, how can I help you?"


def decide(
    items: list[dict[str, Any]],
    *,
    instructions: str | None,
    tools: list[dict[str, Any]],
    tool_choice: Any = "auto",
) -> Reply:
    """Pick the reply to the conversation ``items`` (GA item dicts, oldest first)."""
    if items and _is_tool_result(items[-1]):
        return Reply(text=tool_results_text(items))

    user = next(
        (i for i in reversed(items) if i.get("type") == "message" and i.get("role") == "user"), None
    )
    if user is None:
        return Reply(text=greeting(instructions))
    texts: list[str] = []
    images = 0
    for part in user.get("content") or []:
        kind = part.get("type")
        if kind == "input_text" and part.get("text"):
            texts.append(part["text"])
        elif kind == "input_audio" and part.get("transcript"):
            texts.append(part["transcript"])
        elif kind == "input_image":
            images += 1
    said = " ".join(" ".join(texts).split())

    if tool_choice != "none":
        calls = _choose_calls(said, tools, tool_choice)
        if calls:
            first = next((c for c in calls if c.kind == "function"), None)
            return Reply(
                function_name=first.name if first else None,
                arguments=dict(first.arguments) if first else {},
                calls=calls,
            )

    said_sentence = said.rstrip(".!?")
    if images:
        prefix = "I see an image." if images == 1 else f"I see {images} images."
        return Reply(text=f"{prefix} You said: {said_sentence}." if said_sentence else prefix)
    if said_sentence:
        return Reply(text=f"You said: {said_sentence}.")
    return Reply(text="Sorry, I did not catch that.")


def _call_for(tool: dict[str, Any], template: ToolCall, text: str) -> ToolCall:
    if template.kind == "mcp":
        digits = digits_heard(text)
        arguments: dict[str, Any] = {"query": digits} if digits else {}
    else:
        arguments = tool_arguments(tool, text)
    return ToolCall(
        name=template.name,
        arguments=arguments,
        kind=template.kind,
        server_label=template.server_label,
    )


def _choose_calls(said: str, tools: list[dict[str, Any]], tool_choice: Any) -> list[ToolCall]:
    candidates = _candidates(tools)
    if isinstance(tool_choice, dict) and tool_choice.get("type") in ("function", "mcp"):
        forced = [
            (tool, call)
            for tool, call in candidates
            if call.kind == tool_choice["type"]
            and (tool_choice.get("name") in (None, call.name))
            and (call.kind == "function" or call.server_label == tool_choice.get("server_label"))
        ]
        if forced:
            named = match_tools(said, forced)
            tool, call, _ = named[0] if named else (*forced[0], said)
            return [_call_for(tool, call, said)]
    matched = match_tools(said, candidates)
    if matched:
        return [_call_for(tool, call, text) for tool, call, text in matched]
    if tool_choice == "required" and candidates:
        tool, call = candidates[0]
        return [_call_for(tool, call, said)]
    return []
