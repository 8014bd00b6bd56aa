"""The tenant's data policy, applied in one place: what of a conversation is stored and sent on.

``Tenant.data_policy`` is one of:

* ``keep``: content is stored and sent as it was said.
* ``redact``: personal data (``agents.pii``) is replaced by its type, ``[card_number]``, in
  everything stored (transcript items, summaries, segment seeds, analysis) and sent on (the
  console's live view, webhook payloads).
* ``metadata``: no content outlives the session. While it runs, its transcript is stored
  redacted, because compaction reads it back to seed a rotated upstream; when it ends the
  content is deleted (``session_content_discard``), leaving roles, kinds, order, times, counts
  and tool names. The live view and everything sent on carry no content at all.

The upstream model always hears the caller as they are: nothing here touches the live relay.
Whatever the platform stores or sends of a conversation goes through one of these functions:
``content_for_storage`` / ``value_for_storage`` for what outlives the session (analysis,
webhook payloads), the ``transcript_item_*`` pair for the recorder, ``content_while_live`` for
what compaction stores.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from agents import pii
from agents.models import SessionSegment, SessionSummary, TranscriptItem
from tenants.models import Tenant
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

KEEP = "keep"
REDACT = "redact"
METADATA = "metadata"
POLICIES = (KEEP, REDACT, METADATA)

# Transcript items whose text is a tool's name, not what anybody said.
_NAME_KINDS = frozenset({"function_call", "mcp_call", "mcp_list_tools"})
# Keys of an item's ``data`` that describe it without its content.
_METADATA_KEYS = frozenset({"name", "call_id", "server_label", "status", "images", "language"})


def _check(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"unknown data policy {policy!r}")
    return policy


def keeps_content(policy: str) -> bool:
    """Whether content outlives the session at all (not under "metadata only")."""
    return _check(policy) != METADATA


def content_for_storage(policy: str, text: str) -> str:
    """Conversation text as kept after the session or sent on (analysis, webhook payloads)."""
    policy = _check(policy)
    if policy == KEEP:
        return text
    if policy == REDACT:
        return pii.redact(text)
    return ""


def value_for_storage(policy: str, value: Any) -> Any:
    """JSON-like content (tool arguments and outputs, extracted data, a transcript in a
    payload) as kept after the session or sent on. Under "metadata" its shape stays, keys,
    numbers and booleans included, and every string is emptied."""
    policy = _check(policy)
    if policy == KEEP:
        return value
    if policy == REDACT:
        return pii.redact_value(value)
    return _strings_emptied(value)


def content_while_live(policy: str, text: str) -> str:
    """Conversation text stored while the session runs (its transcript, compaction summaries):
    redacted under "redact" and under "metadata" (removed when the session ends)."""
    return text if _check(policy) == KEEP else pii.redact(text)


def transcript_item_for_storage(
    policy: str, *, kind: str, text: str, data: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """A transcript item's text and data as stored while its session runs."""
    if _check(policy) == KEEP:
        return text, data
    return pii.redact(text), pii.redact_value(data)


def transcript_item_for_sending(
    policy: str, *, kind: str, text: str, data: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """A transcript item's text and data as sent on (the live view) or kept after the session.
    ``text`` and ``data`` are those already stored (``transcript_item_for_storage``)."""
    if _check(policy) == METADATA:
        return transcript_item_metadata(kind=kind, text=text, data=data)
    return text, data


def transcript_item_metadata(
    *, kind: str, text: str, data: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """What "metadata only" keeps of an item: a tool's name, never what was said or passed."""
    kept_text = text if kind in _NAME_KINDS else ""
    kept_data = {key: value for key, value in (data or {}).items() if key in _METADATA_KEYS}
    return kept_text, kept_data


def _strings_emptied(value: Any) -> Any:
    if isinstance(value, str):
        return ""
    if isinstance(value, dict):
        return {key: _strings_emptied(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strings_emptied(item) for item in value]
    return value


# --- the tenant's policy and the end of a session ------------------------------------------------


def tenant_data_policy(*, tenant_id: int) -> str:
    """The tenant's current policy ("keep" when the tenant is gone)."""
    policy = Tenant.objects.filter(pk=tenant_id).values_list("data_policy", flat=True).first()
    return policy or KEEP


def session_content_discard(*, session_id: int, tenant_id: int) -> int:
    """Delete a session's content, keeping its metadata (idempotent): transcript items keep
    role, kind, order, times and tool names; the summary and segment seeds lose their text.
    Returns how many transcript items changed."""
    changed = 0
    with tenant_scope(tenant_id), transaction.atomic():
        items = TranscriptItem.objects.filter(session_id=session_id).only("kind", "text", "data")
        for item in items:
            text, data = transcript_item_metadata(kind=item.kind, text=item.text, data=item.data)
            if (text, data) != (item.text, item.data):
                item.text, item.data = text, data
                item.save(update_fields=["text", "data"])
                changed += 1
        SessionSummary.objects.filter(session_id=session_id).update(text="", prompt="", output="")
        SessionSegment.objects.filter(session_id=session_id).update(seed_summary="")
    return changed


def session_ended_receiver(sender: Any, *, session_id: int, tenant_id: int, **kwargs: Any) -> None:
    """Under "metadata only", a session's content goes when it ends."""
    if tenant_data_policy(tenant_id=tenant_id) == METADATA:
        changed = session_content_discard(session_id=session_id, tenant_id=tenant_id)
        logger.info("session %s ended: content of %s items discarded", session_id, changed)
