"""Function calls: who answers each one, and when a follow-up response is due.

OpenAI's rule for a client is: answer a call with a ``function_call_output`` item, then ask for
the next response with ``response.create``. The relay keeps that rule intact:

* calls the platform answers (tenant webhooks, a client tool that timed out, a client tool on a
  phone) get their outputs from the platform, and when every call of a finished response was
  answered this way, the platform asks for the follow-up itself;
* calls the client answers (client tools, calls the client itself created as history) are the
  client's: it sends the output with its own item id and its own ``response.create``, and the
  platform adds none. A client ``response.create`` that arrives while a webhook of the same turn
  is still running is held until its output is in, so the model sees every result.

``PlatformEvents`` remembers the ids of the events the platform itself sends upstream, so that
an error answering one of them is the platform's to handle and never reaches the client.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeGuard

WEBHOOK, CLIENT, UNAVAILABLE = "webhook", "client", "unavailable"
# The platform's own tools (``end_call``, ``transfer_call``): run once the response that called
# them is done and heard; never answered unless they fail (no follow-up then: the call ends).
BUILTIN = "builtin"
PLATFORM_OUTPUT_PREFIX = "vp_out_"


@dataclass
class Call:
    call_id: str
    name: str
    answerer: str  # WEBHOOK, CLIENT, UNAVAILABLE or BUILTIN
    response_id: str
    tool: dict[str, Any] | None = None
    answered: bool = False
    answered_by_client: bool = False


class Calls:
    def __init__(self, *, tools: tuple[dict[str, Any], ...], webhooks: bool, phone: bool) -> None:
        self._tools = {tool.get("name"): tool for tool in tools}
        self._webhooks = webhooks
        self._phone = phone
        self._calls: dict[str, Call] = {}
        self._finished: set[str] = set()
        self._follow_up_pending = False  # asked for, not yet started or refused
        self._retry_follow_up = False

    # --- calls arrive ------------------------------------------------------------------------

    def on_model_call(self, item: dict[str, Any], response_id: str) -> Call | None:
        """A ``function_call`` the model made (``response.output_item.done``); None if known."""
        call_id, name = item.get("call_id"), item.get("name")
        if not isinstance(call_id, str) or not call_id or call_id in self._calls:
            return None
        tool = self._tools.get(name)
        if tool is not None and tool.get("execution") == BUILTIN:
            answerer = BUILTIN
        elif tool is not None and tool.get("execution") == "webhook" and self._webhooks:
            answerer = WEBHOOK
        elif self._phone:
            answerer = UNAVAILABLE  # a phone cannot run client-side tools
        else:
            answerer = CLIENT
        call = Call(call_id, str(name), answerer, response_id, tool)
        self._calls[call_id] = call
        return call

    def on_client_item(self, item: dict[str, Any]) -> None:
        """A ``function_call`` item the client created itself (history, a resumed session)."""
        call_id = item.get("call_id")
        if isinstance(call_id, str) and call_id and call_id not in self._calls:
            self._calls[call_id] = Call(call_id, str(item.get("name") or ""), CLIENT, "")

    def on_response_done(self, response_id: str) -> None:
        self._finished.add(response_id)
        self._follow_up_pending = False

    # --- answers -----------------------------------------------------------------------------

    def client_may_answer(self, call_id: Any) -> TypeGuard[str]:
        call = self._calls.get(call_id) if isinstance(call_id, str) else None
        return call is not None and call.answerer == CLIENT and not call.answered

    def answered(self, call: Call, *, by_client: bool) -> bool:
        """Mark a call answered; False if it already was (the first answer wins)."""
        if call.answered:
            return False
        call.answered = True
        call.answered_by_client = by_client
        return True

    def builtin_calls_of(self, response_id: str) -> list[Call]:
        """The built-in calls a finished response made, still to run."""
        return [
            call
            for call in self._calls.values()
            if call.answerer == BUILTIN and call.response_id == response_id and not call.answered
        ]

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def pending(self) -> list[Call]:
        return [call for call in self._calls.values() if not call.answered]

    @property
    def platform_work_pending(self) -> bool:
        """A webhook is still running: a client's response.create waits for its output."""
        return any(call.answerer == WEBHOOK and not call.answered for call in self._calls.values())

    # --- follow-ups --------------------------------------------------------------------------

    def follow_up_due(self) -> bool:
        """The platform should ask for the next response now (and has not yet).

        Due when a finished response's calls are all answered and the platform answered all
        of them; a response whose calls the client answered is followed up by the client.
        """
        if self._follow_up_pending:
            return False
        due, self._retry_follow_up = self._retry_follow_up, False
        for response_id in list(self._finished):
            calls = [call for call in self._calls.values() if call.response_id == response_id]
            if any(not call.answered for call in calls):
                continue
            self._finished.discard(response_id)
            if calls and not any(call.answered_by_client for call in calls):
                due = True
        if due:
            self._follow_up_pending = True
        return due

    def follow_up_refused(self) -> None:
        """The upstream refused the platform's response.create (a response was active)."""
        self._follow_up_pending = False
        self._retry_follow_up = True  # asked again once that response is done


class PlatformEvents:
    """Ids of events the platform sent upstream on its own account (bounded memory)."""

    def __init__(self, capacity: int = 256) -> None:
        self._ids: deque[str] = deque(maxlen=capacity)

    def new_id(self) -> str:
        event_id = "vp_evt_" + secrets.token_hex(8)
        self._ids.append(event_id)
        return event_id

    def answers_ours(self, error: dict[str, Any]) -> bool:
        return isinstance(error.get("event_id"), str) and error["event_id"] in self._ids
