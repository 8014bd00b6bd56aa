"""Reads of the analytics page: how a tenant's sessions went over a date range.

Sessions count on the (UTC) day they started. Durations and percentiles are computed here in
Python over the range's sessions, read as three narrow columns in one query, so that the figures
are the same on SQLite and PostgreSQL (SQLite has no percentile function); the range is bounded
(a year at most) and the read streams. Cost per agent comes from the billing tallies, on the
day the usage occurred.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from agents.models import Session, TranscriptItem
from billing.selectors import usage_summary

MAX_RANGE_DAYS = 366


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` 0.95 for p95) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass
class Analytics:
    start: date
    end: date  # inclusive
    sessions: int = 0
    sessions_per_day: dict[date, int] = field(default_factory=dict)
    minutes_per_day: dict[date, float] = field(default_factory=dict)
    ended: int = 0
    minutes: float = 0.0
    average_duration_s: float | None = None
    p95_duration_s: float | None = None
    end_reasons: list[tuple[str, int]] = field(default_factory=list)
    first_audio_sessions: int = 0
    average_first_audio_ms: float | None = None
    p95_first_audio_ms: float | None = None
    tool_outputs: int = 0
    tool_errors: int = 0
    tool_errors_by_tool: list[tuple[str, int]] = field(default_factory=list)
    # Billed amounts (what the tenant is invoiced), as every tenant-facing figure.
    billed_by_agent: list[tuple[str, Decimal]] = field(default_factory=list)
    billed: Decimal = Decimal(0)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def session_analytics(*, tenant_id: int, start: date, end: date) -> Analytics:
    """The figures of the active tenant's sessions started from ``start`` to ``end``
    (inclusive). Must run inside the tenant's scope."""
    result = Analytics(start=start, end=end)
    since, until = _day_start(start), _day_start(end + timedelta(days=1))
    in_range = Session.objects.filter(started_at__gte=since, started_at__lt=until)
    per_day: Counter[date] = Counter()
    seconds_per_day: Counter[date] = Counter()
    durations: list[float] = []
    first_audio: list[float] = []
    reasons: Counter[str] = Counter()
    rows = in_range.values_list("started_at", "ended_at", "end_reason", "first_audio_ms")
    for started_at, ended_at, end_reason, first_audio_ms in rows.iterator(chunk_size=5000):
        day = started_at.astimezone(UTC).date()
        per_day[day] += 1
        reasons[end_reason or "in_progress"] += 1
        if ended_at is not None:
            seconds = max((ended_at - started_at).total_seconds(), 0.0)
            durations.append(seconds)
            seconds_per_day[day] += seconds
        if first_audio_ms is not None:
            first_audio.append(float(first_audio_ms))
    result.sessions = sum(per_day.values())
    day = start
    while day <= end:
        result.sessions_per_day[day] = per_day.get(day, 0)
        result.minutes_per_day[day] = round(seconds_per_day.get(day, 0.0) / 60, 1)
        day += timedelta(days=1)
    result.ended = len(durations)
    result.minutes = sum(durations) / 60
    if durations:
        result.average_duration_s = sum(durations) / len(durations)
        result.p95_duration_s = percentile(durations, 0.95)
    labels = dict(Session.EndReason.choices) | {"in_progress": "In progress"}
    result.end_reasons = sorted(
        ((labels.get(reason, reason), count) for reason, count in reasons.items()),
        key=lambda pair: (-pair[1], pair[0]),
    )
    result.first_audio_sessions = len(first_audio)
    if first_audio:
        result.average_first_audio_ms = sum(first_audio) / len(first_audio)
        result.p95_first_audio_ms = percentile(first_audio, 0.95)
    _tool_errors(result, since=since, until=until)
    _cost_by_agent(result, tenant_id=tenant_id)
    return result


def _tool_errors(result: Analytics, *, since: datetime, until: datetime) -> None:
    """Tool results the platform gave with an error (webhook failed, timed out, unavailable:
    ``data.error`` on the function_call_output line), by tool."""
    outputs = TranscriptItem.objects.filter(
        kind=TranscriptItem.Kind.FUNCTION_CALL_OUTPUT,
        session__started_at__gte=since,
        session__started_at__lt=until,
    )
    result.tool_outputs = outputs.count()
    by_tool: Counter[str] = Counter()
    for data in outputs.filter(data__has_key="error").values_list("data", flat=True).iterator():
        by_tool[str((data or {}).get("name") or "(unnamed)")] += 1
    result.tool_errors = sum(by_tool.values())
    result.tool_errors_by_tool = sorted(by_tool.items(), key=lambda pair: (-pair[1], pair[0]))


def _cost_by_agent(result: Analytics, *, tenant_id: int) -> None:
    summary = usage_summary(tenant_id=tenant_id, start=result.start, end=result.end)
    billed: dict[str, Decimal] = {}
    for row in summary.rows:
        billed[row.agent_name] = billed.get(row.agent_name, Decimal(0)) + row.billed
    result.billed_by_agent = sorted(billed.items(), key=lambda pair: (-pair[1], pair[0]))
    result.billed = summary.billed


def date_range_parse(params: dict[str, str], *, today: date) -> tuple[date, date, str]:
    """The ``start``/``end`` (inclusive) of a query, the last 30 days by default, and any error
    (the default range is used then)."""
    default = today - timedelta(days=29), today
    try:
        start = date.fromisoformat(params["start"]) if params.get("start") else default[0]
        end = date.fromisoformat(params["end"]) if params.get("end") else default[1]
    except ValueError:
        return *default, "Dates must look like 2026-11-21."
    if end < start:
        return *default, "The end is before the start."
    if (end - start).days >= MAX_RANGE_DAYS:
        return start, start + timedelta(days=MAX_RANGE_DAYS - 1), "At most a year at a time."
    return start, end, ""
