"""Conversation summaries that let a conversation continue in a new upstream session.

Two summarizers with one contract, ``(previous summary, new turns) -> summary``:

* ``summarize_locally``: extractive and offline. It keeps the sentences that carry what an agent
  needs to go on (names, numbers, dates, requests and decisions), merges them with the previous
  summary without repeating itself, and keeps the most recent ones within a size budget.
* ``summarize_with_openai``: the Responses API with a text model, for tenants (or a platform)
  with a key. The prompt asks for the same facts.

No Django here: the compaction service stores prompts and outputs for audit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from openai import OpenAI

MAX_SUMMARY_CHARS = 2000

SUMMARY_INSTRUCTIONS = (
    "You maintain the running summary of a live voice conversation between a user and an "
    "assistant, so that the assistant can continue it in a fresh session. Keep every fact the "
    "assistant needs: names, numbers (order numbers, amounts, phone numbers), dates and times, "
    "addresses, decisions taken, promises made and open requests. Drop greetings and small "
    "talk. Write short plain sentences, at most 150 words, as 'User: …' and 'Assistant: …' "
    "facts. Never invent anything."
)

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_NUMBER = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|hundred)\b", re.I)
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "monday|tuesday|wednesday|thursday|friday|saturday|sunday|today|tomorrow|yesterday"
)
_DATE = re.compile(rf"\b({_MONTHS})\b", re.I)
_REQUEST = re.compile(
    r"\b(please|want|need|would like|could you|can you|book|order|cancel|change|refund|"
    r"deliver|send|call me|email|address|problem|issue|agreed|will|promise|confirm)\b",
    re.I,
)
_NAME_INTRO = re.compile(r"\b(my name is|i am|i'm|this is|call me)\s+([a-z][a-z'-]+)", re.I)


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant"
    text: str


def _important(sentence: str) -> bool:
    words = sentence.split()
    # A capitalised word that does not start the sentence is most likely a name.
    has_name = any(word[:1].isupper() and word.lower() != "i" for word in words[1:])
    return bool(
        _NUMBER.search(sentence)
        or _DATE.search(sentence)
        or _REQUEST.search(sentence)
        or _NAME_INTRO.search(sentence)
        or has_name
    )


def _facts(turns: Sequence[Turn]) -> list[str]:
    facts = []
    for turn in turns:
        speaker = "User" if turn.role == "user" else "Assistant"
        for match in _SENTENCE.finditer(turn.text or ""):
            sentence = " ".join(match.group(0).split())
            if len(sentence) >= 3 and _important(sentence):
                if sentence[-1] not in ".!?":
                    sentence += "."
                facts.append(f"{speaker}: {sentence}")
    return facts


def summarize_locally(previous: str, turns: Sequence[Turn]) -> str:
    """Previous summary lines plus the important sentences of the new turns, newest kept."""
    lines = [line for line in (previous or "").splitlines() if line.strip()]
    for fact in _facts(turns):
        if fact not in lines:
            lines.append(fact)
    # Within the budget, the oldest facts go first, except that the earliest line naming the
    # user stays: a name is the fact a conversation can least afford to lose.
    keep_first = next((line for line in lines if _NAME_INTRO.search(line)), None)
    while len("\n".join(lines)) > MAX_SUMMARY_CHARS and len(lines) > 1:
        drop = 1 if lines[0] == keep_first and len(lines) > 2 else 0
        lines.pop(drop)
    return "\n".join(lines)


def openai_prompt(previous: str, turns: Sequence[Turn]) -> str:
    transcript = "\n".join(
        f"{'User' if turn.role == 'user' else 'Assistant'}: {turn.text}" for turn in turns
    )
    return (
        f"Summary so far:\n{previous or '(none yet)'}\n\n"
        f"New turns:\n{transcript}\n\n"
        "Write the updated summary."
    )


def summarize_with_openai(
    *,
    api_key: str,
    base_url: str,
    model: str,
    previous: str,
    turns: Sequence[Turn],
    timeout: float = 20.0,
) -> tuple[str, str]:
    """(prompt, summary) from the Responses API. Raises on any API error."""
    prompt = openai_prompt(previous, turns)
    client = OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=1)
    response = client.responses.create(
        model=model, instructions=SUMMARY_INSTRUCTIONS, input=prompt, max_output_tokens=400
    )
    text = (response.output_text or "").strip()
    if not text:
        raise ValueError("the summarizer returned no text")
    return prompt, text
