"""What a browser is told: only what the widget needs to talk and to run its page's tools.

A widget runs on a tenant's public page, so whatever reaches it reaches anyone. The platform's
other clients (the tenant's own backend, the console) see everything; a widget does not see:

* tools it cannot run: webhook tools (their URLs and definitions) and MCP servers (their URLs,
  labels, allowed tools) are removed from ``session.created``/``session.updated``; function
  tools the page itself registers (client-executed) stay, since the widget must run them;
* what a tenant's server answered: the ``output`` of a ``function_call_output`` the platform
  sent for a webhook, the ``output`` and ``arguments`` of MCP calls and the tool lists of MCP
  servers are emptied (the items stay, so the conversation's shape is the same).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_ITEM_EVENTS = frozenset(
    {
        "conversation.item.added",
        "conversation.item.created",
        "conversation.item.done",
        "response.output_item.added",
        "response.output_item.done",
    }
)


def session_for_widget(session: dict[str, Any], *, client_tools: frozenset[str]) -> dict[str, Any]:
    """A copy of ``session`` with only the function tools the page runs."""
    tools = session.get("tools")
    if not isinstance(tools, list):
        return session
    kept = [
        tool
        for tool in tools
        if isinstance(tool, dict)
        and tool.get("type", "function") == "function"
        and tool.get("name") in client_tools
    ]
    return {**session, "tools": kept}


def item_event_for_widget(
    event: dict[str, Any], *, answered_by_platform: Callable[[str], bool]
) -> dict[str, Any] | None:
    """``event`` with a server's answers emptied, or None when nothing needs to change."""
    if event.get("type") not in _ITEM_EVENTS:
        return None
    item = event.get("item")
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind == "function_call_output":
        call_id = item.get("call_id")
        if not (isinstance(call_id, str) and answered_by_platform(call_id)):
            return None  # the page's own answer: it has it anyway
        item = {**item, "output": ""}
    elif kind == "mcp_call":
        item = {**item, "arguments": "", "output": ""}
    elif kind == "mcp_list_tools":
        item = {**item, "tools": []}
    else:
        return None
    return {**event, "item": item}
