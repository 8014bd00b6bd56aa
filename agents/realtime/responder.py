"""The local engine's deterministic responder. It is NOT an AI.

It decides, from the conversation and the session configuration, what the assistant says,
in a fixed and predictable way so that tests and offline demos can rely on it:

* last item a ``function_call_output`` -> "The <tool words> tool returned: <output>."
* last user turn names a configured function tool (tool name with ``_``/camelCase read as
  words, matched against the user's words with spaces and punctuation ignored, so tool
  ``lookup_order`` matches "look up order" and "lookup order") and ``tool_choice`` is not
  "none" -> a ``function_call`` whose arguments map the digits heard (digits or number
  words, e.g. "one two three" -> "123") to the tool's first string or integer parameter,
  otherwise ``{}``. ``tool_choice`` naming a function forces that function; "required"
  forces a tool (the matched one, else the first).
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
class Reply:
    """What the assistant does: speak ``text``, or call ``function_name(arguments)``."""

    text: str = ""
    function_name: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


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
    text = " ".join(text.split())
    return text[:300] if text else "nothing"


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
    if items and items[-1].get("type") == "function_call_output":
        output = items[-1]
        call = next(
            (
                i
                for i in reversed(items)
                if i.get("type") == "function_call" and i.get("call_id") == output.get("call_id")
            ),
            None,
        )
        name = tool_words(call["name"]) if call else "function"
        return Reply(
            text=f"The {name} tool returned: {_describe_output(output.get('output', ''))}."
        )

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
        candidates = _function_tools(tools)
        tool = None
        if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
            tool = next((t for t in candidates if t["name"] == tool_choice.get("name")), None)
        if tool is None:
            tool = match_tool(said, candidates)
        if tool is None and tool_choice == "required" and candidates:
            tool = candidates[0]
        if tool is not None:
            return Reply(function_name=tool["name"], arguments=tool_arguments(tool, said))

    said_sentence = said.rstrip(".!?")
    if images:
        prefix = "I see an image." if images == 1 else f"I see {images} images."
        return Reply(text=f"{prefix} You said: {said_sentence}." if said_sentence else prefix)
    if said_sentence:
        return Reply(text=f"You said: {said_sentence}.")
    return Reply(text="Sorry, I did not catch that.")
