"""A session's transcript as a download: plain text for people, JSON for programs.

Exported as stored: the tenant's data policy already applied when each line was written
(``agents.privacy``), and an erased session's lines are already blank.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from agents.models import Session, TranscriptItem

FORMATS = ("txt", "json")


def _offset(item: TranscriptItem, session: Session) -> str:
    seconds = max(int((item.created_at - session.started_at).total_seconds()), 0)
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _line(item: TranscriptItem) -> str:
    if item.kind == TranscriptItem.Kind.FUNCTION_CALL:
        return f"{item.data.get('name', '')}({item.data.get('arguments', '')})"
    if item.kind == TranscriptItem.Kind.FUNCTION_CALL_OUTPUT:
        error = item.data.get("error")
        return f"{item.text}" + (f"  [error: {error}]" if error else "")
    return item.text or "(no words)"


def transcript_text(session: Session, items: list[TranscriptItem]) -> str:
    ended = (
        f"{session.ended_at:%Y-%m-%d %H:%M:%S} UTC ({session.get_end_reason_display()})"
        if session.ended_at
        else "in progress"
    )
    lines = [
        f"Session {session.pk} with {session.agent.name} ({session.get_channel_display()}, "
        f"{session.model})",
        f"Started {session.started_at:%Y-%m-%d %H:%M:%S} UTC, ended {ended}",
        "",
    ]
    for item in items:
        who = item.get_role_display()
        if item.kind != TranscriptItem.Kind.MESSAGE:
            who += f" · {item.get_kind_display()}"
        lines.append(f"[{_offset(item, session)}] {who}: {_line(item)}")
    return "\n".join(lines) + "\n"


def transcript_json(session: Session, items: list[TranscriptItem]) -> str:
    document: dict[str, Any] = {
        "session": {
            "id": session.pk,
            "agent": {"id": session.agent_id, "name": session.agent.name},
            "channel": session.channel,
            "model": session.model,
            "started_at": _iso(session.started_at),
            "ended_at": _iso(session.ended_at),
            "end_reason": session.end_reason or None,
        },
        "items": [
            {
                "sequence": item.sequence,
                "id": item.upstream_item_id,
                "role": item.role,
                "kind": item.kind,
                "text": item.text,
                "data": item.data,
                "created_at": _iso(item.created_at),
            }
            for item in items
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
