"""Sessions: a filtered, cursor-paginated list; detail, transcript, recording, analysis."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field, field_validator

from agents import recordings
from agents.models import Session, SessionAnalysis, TranscriptItem
from tenants.scoping import tenant_scope
from voiceplatform.api import schemas
from voiceplatform.api.auth import READ, caller
from voiceplatform.api.errors import ApiError, not_found
from voiceplatform.api.responses import answers

router = Router(auth=READ, tags=["sessions"])


class SessionFilters(Schema):
    agent: int | None = Field(None, description="Only this agent's sessions")
    channel: schemas.Channel | None = None
    ended: bool | None = Field(None, description="true: ended ones; false: still live")
    since: datetime | None = Field(None, description="Started at or after (ISO 8601)")
    until: datetime | None = Field(None, description="Started before (ISO 8601)")
    end_reason: schemas.EndReason | None = None
    cursor: str | None = Field(None, description="next_cursor of the previous page")
    limit: int = Field(20, ge=1, description="Page size (at most VP_API_PAGE_MAX, 100)")

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso_8601_only(cls, value: object) -> object:
        # pydantic would also take a bare number as a Unix time; the schema says ISO 8601.
        if value is None or isinstance(value, datetime):
            return value
        if not isinstance(value, str):
            raise ValueError("an ISO 8601 date-time, e.g. 2026-11-30T12:00:00Z")
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("an ISO 8601 date-time, e.g. 2026-11-30T12:00:00Z") from None
        return value

    @field_validator("since", "until")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        # Any offset Python reads (up to ±24 h) is fine once in UTC; PostgreSQL refuses some
        # as they stand ("time zone displacement out of range"). A naive time is UTC.
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("a date-time between the years 1 and 9999") from None


def _cursor_encode(session_id: int) -> str:
    return base64.urlsafe_b64encode(f"s:{session_id}".encode()).decode().rstrip("=")


def _cursor_decode(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "s":
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_cursor", "cursor: not a cursor this API gave.", param="cursor"
        ) from None


def session_out(session: Session) -> dict[str, Any]:
    return {
        "id": session.pk,
        "agent": session.agent_id,
        "agent_version": session.agent_version.number if session.agent_version else None,
        "channel": session.channel,
        "model": session.model,
        "started_at": session.started_at,
        "ended_at": session.ended_at,
        "end_reason": session.end_reason,
        "duration_seconds": session.duration_seconds,
        "audio_in_seconds": session.audio_in_seconds,
        "audio_out_seconds": session.audio_out_seconds,
    }


def _choice(value: str | None, choices: list[str], param: str) -> str | None:
    if value is not None and value not in choices:
        raise ApiError(400, "invalid_value", f"{param}: one of {', '.join(choices)}", param=param)
    return value


@router.get("/sessions", response=answers(schemas.SessionPage), summary="List sessions")
def sessions_list(request: HttpRequest, filters: Query[SessionFilters]) -> dict[str, Any]:
    """Newest first, ``limit`` at a time; follow ``next_cursor`` while ``has_more``."""
    api_key = caller(request)
    limit = min(filters.limit, settings.VP_API_PAGE_MAX)
    channel = _choice(filters.channel, Session.Channel.values, "channel")
    end_reason = _choice(filters.end_reason, Session.EndReason.values, "end_reason")
    with tenant_scope(api_key.tenant_id):
        sessions = Session.objects.select_related("agent_version").order_by("-pk")
        if filters.agent is not None:
            sessions = sessions.filter(agent_id=filters.agent)
        if channel:
            sessions = sessions.filter(channel=channel)
        if filters.ended is not None:
            sessions = sessions.filter(ended_at__isnull=not filters.ended)
        if filters.since is not None:
            sessions = sessions.filter(started_at__gte=filters.since)
        if filters.until is not None:
            sessions = sessions.filter(started_at__lt=filters.until)
        if end_reason:
            sessions = sessions.filter(end_reason=end_reason)
        if filters.cursor:
            sessions = sessions.filter(pk__lt=_cursor_decode(filters.cursor))
        page = list(sessions[: limit + 1])
    has_more = len(page) > limit
    page = page[:limit]
    return {
        "data": [session_out(session) for session in page],
        "has_more": has_more,
        "next_cursor": _cursor_encode(page[-1].pk) if has_more else None,
    }


def _session_get(tenant_id: int, session_id: int) -> Session:
    with tenant_scope(tenant_id):
        session = Session.objects.select_related("agent_version").filter(pk=session_id).first()
    if session is None:
        raise not_found("session")
    return session


@router.get("/sessions/{session_id}", response=answers(schemas.SessionOut), summary="Read")
def sessions_read(request: HttpRequest, session_id: int) -> dict[str, Any]:
    return session_out(_session_get(caller(request).tenant_id, session_id))


@router.get(
    "/sessions/{session_id}/transcript",
    response=answers(schemas.Transcript),
    summary="Transcript",
)
def sessions_transcript(request: HttpRequest, session_id: int) -> dict[str, Any]:
    """The conversation's completed items in order, as stored under the tenant's data policy."""
    session = _session_get(caller(request).tenant_id, session_id)
    with tenant_scope(session.tenant_id):
        items = list(TranscriptItem.objects.filter(session=session).order_by("sequence", "pk"))
    return {
        "session": session.pk,
        "data": [
            {
                "sequence": item.sequence,
                "role": item.role,
                "kind": item.kind,
                "text": item.text,
                "data": item.data if isinstance(item.data, dict) else {"value": item.data},
                "created_at": item.created_at,
            }
            for item in items
        ],
    }


@router.get(
    "/sessions/{session_id}/recording",
    response=answers(schemas.RecordingOut),
    summary="Recording",
)
def sessions_recording(request: HttpRequest, session_id: int) -> dict[str, Any]:
    """The recording's state and, once ready, a signed download link that expires."""
    session = _session_get(caller(request).tenant_id, session_id)
    with tenant_scope(session.tenant_id):
        recording = recordings.recording_for_session(session)
    if recording is None:
        raise not_found("recording")
    ready = recording.status == recording.Status.READY
    return {
        "session": session.pk,
        "status": recording.status,
        "format": recording.format,
        "duration_ms": recording.duration_ms,
        "bytes": recording.bytes,
        "created_at": recording.created_at,
        "ready_at": recording.ready_at,
        "download_url": recordings.recording_link(recording) if ready else None,
        "download_url_expires_in": settings.VP_RECORDING_LINK_SECONDS if ready else None,
    }


@router.get(
    "/sessions/{session_id}/analysis",
    response=answers(schemas.AnalysisOut),
    summary="Post-call analysis",
)
def sessions_analysis(request: HttpRequest, session_id: int) -> dict[str, Any]:
    session = _session_get(caller(request).tenant_id, session_id)
    with tenant_scope(session.tenant_id):
        analysis = SessionAnalysis.objects.filter(session=session).first()
    if analysis is None:
        raise not_found("analysis")
    return {
        "session": session.pk,
        "status": analysis.status,
        "method": analysis.method,
        "model": analysis.model,
        "summary": analysis.summary,
        "success": analysis.success,
        "success_reason": analysis.success_reason,
        "data": analysis.data,
        "data_valid": analysis.data_valid,
        "data_problem": analysis.data_problem,
        "requested_at": analysis.requested_at,
        "completed_at": analysis.completed_at,
    }
