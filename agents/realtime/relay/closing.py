"""The one close table: every way a session ends, the error event the client gets, the code.

Close codes are ones that every server can send: Daphne's WebSocket layer refuses 1001, 1008,
1011 and 1013 (only 1000 and 3000-4999 go out), so each standard meaning has a 4000-range twin,
``4000 + the standard code``, as OpenAI's own server closes in the 4000 range. The close reason
is the error code, so a client that only sees the close still knows why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ending:
    code: str  # ``error.code`` of the client's error event, and the close reason
    message: str
    close_code: int
    end_reason: str  # what the session row records
    error_type: str = "server_error"


CLOSE_NORMAL = 1000
CLOSE_ENDED = 4000
CLOSE_GOING_AWAY = 4001  # 1001: the session reached its end of life
CLOSE_POLICY = 4008  # 1008: the client broke a rule
CLOSE_SLOW_READER = 4010
CLOSE_SERVER_ERROR = 4011  # 1011: something failed on our side or upstream
CLOSE_TRY_AGAIN = 4013  # 1013: try again later
# 1012 (Service Restart): the process is draining for a deploy. Daphne cannot send 1012 itself,
# so its twin: clients reconnect (a fresh token for the widget) on 4012 or 1012 alike.
CLOSE_SERVICE_RESTART = 4012
CLOSE_BUDGET_EXHAUSTED = 4402

_ROWS = (
    Ending("session_ended", "An administrator ended the session.", CLOSE_ENDED, "ended_by_admin",
           "invalid_request_error"),
    Ending("session_max_duration", "The session reached the tenant's maximum length.",
           CLOSE_GOING_AWAY, "max_duration", "invalid_request_error"),
    Ending("session_expired", "The realtime session reached its maximum duration.",
           CLOSE_GOING_AWAY, "session_expired", "invalid_request_error"),
    Ending("server_shutdown", "The server is shutting down; reconnect.", CLOSE_GOING_AWAY,
           "server_shutdown"),
    Ending("server_restarting", "The server is restarting; reconnect to continue.",
           CLOSE_SERVICE_RESTART, "server_shutdown"),
    Ending("audio_flood", "Audio was sent far faster than real time; the session ends.",
           CLOSE_POLICY, "policy_violation", "invalid_request_error"),
    Ending("slow_reader", "The client stopped reading; too much output was waiting for it.",
           CLOSE_SLOW_READER, "slow_reader", "invalid_request_error"),
    Ending("budget_exhausted", "The spending limit is reached; the session ends.",
           CLOSE_BUDGET_EXHAUSTED, "budget_exhausted", "invalid_request_error"),
    Ending("upstream_auth_failed", "The voice service refused this tenant's credentials.",
           CLOSE_SERVER_ERROR, "upstream_error"),
    Ending("upstream_rate_limited", "The voice service is rate limiting this tenant; try again "
           "later.", CLOSE_TRY_AGAIN, "upstream_error"),
    Ending("upstream_unavailable", "The voice service could not be reached; try again shortly.",
           CLOSE_TRY_AGAIN, "upstream_error"),
    Ending("upstream_closed", "The voice service closed the session.", CLOSE_SERVER_ERROR,
           "upstream_closed"),
    # The agent ended the conversation (its end_call tool) or handed the phone call on: a
    # normal close, no error event.
    Ending("call_ended", "The agent ended the call.", CLOSE_NORMAL, "agent_ended", ""),
    Ending("call_transferred", "The call was transferred.", CLOSE_NORMAL, "transferred", ""),
    Ending("internal_error", "The session failed on the server; it has been ended.",
           CLOSE_SERVER_ERROR, "internal_error"),
)  # fmt: skip
CLOSE_TABLE: dict[str, Ending] = {row.code: row for row in _ROWS}


def ending(code: str) -> Ending:
    return CLOSE_TABLE.get(code) or CLOSE_TABLE["internal_error"]


def upstream_failure_code(error: BaseException | None) -> str:
    """The ending for an upstream that could not be opened.

    Only network trouble and 5xx are worth retrying at once; a refused key (401/403) is final
    and a rate limit (429) calls for a longer wait.
    """
    status = getattr(getattr(error, "response", None), "status_code", None)
    if status in (401, 403):
        return "upstream_auth_failed"
    if status == 429:
        return "upstream_rate_limited"
    return "upstream_unavailable"


def upstream_closed_details(error: BaseException) -> tuple[int | None, str]:
    """(close code, reason) of an upstream that went away (websockets or the local engine)."""
    if hasattr(error, "rcvd"):  # websockets.ConnectionClosed
        received = error.rcvd
        return (received.code, received.reason) if received is not None else (1006, "")
    return getattr(error, "code", None), getattr(error, "reason", "") or ""
