"""Reads of the console's session list: filters, transcript search, keyset pages, cost.

A tenant may hold many thousands of sessions: pages are keyset pages over the list's order
(newest first, ``started_at`` then ``pk``), never ``OFFSET``, so the thousandth page costs what
the first does. The cost column comes from ``billing.SessionCost`` (stored by the tally; one
join, no query per row); sessions not tallied yet (in progress, or just ended) get theirs from
their usage events, in one grouped query for the page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation

from django.db.models import DecimalField, Exists, OuterRef, Q, QuerySet, Value
from django.db.models.functions import Coalesce

from agents import analysis, search
from agents.models import Session, SessionAnalysis, TranscriptItem
from billing import figures
from billing.selectors import sessions_cost_from_events

PAGE_SIZE = 50
# Up to this many sessions matching a search are filtered by id (see search.matching_session_ids).
SEARCH_CANDIDATES = 2000
MONEY = DecimalField(max_digits=14, decimal_places=6)
IN_PROGRESS = "in_progress"


@dataclass
class SessionFilters:
    """The list's filters as typed values, and the raw text to show back in the form."""

    raw: dict[str, str] = field(default_factory=dict)
    agent_id: int | None = None
    channel: str = ""
    end_reason: str = ""
    start: date | None = None
    end: date | None = None  # inclusive
    success: str = ""
    data: str = ""
    search: str = ""
    cost_min: Decimal | None = None
    cost_max: Decimal | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def any_set(self) -> bool:
        return any(value for key, value in self.raw.items() if key != "after")


FILTER_NAMES = (
    "agent", "channel", "end_reason", "from", "to", "date", "success", "data", "q",
    "cost_min", "cost_max",
)  # fmt: skip


def _day(text: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append("Dates must look like 2026-11-21.")
        return None


def _money(text: str, errors: list[str]) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value < 0 or value >= Decimal("1e8"):
        errors.append("A cost must be an amount in USD, like 0.25.")
        return None
    return value


def session_filters_parse(params: Mapping[str, str]) -> SessionFilters:
    """The filters of a query string; what does not parse is left out, with a message."""
    raw = {name: str(params.get(name, "")).strip() for name in FILTER_NAMES}
    errors: list[str] = []
    filters = SessionFilters(raw=raw, errors=errors)
    if raw["agent"].isdigit():
        filters.agent_id = int(raw["agent"])
    if raw["channel"] in Session.Channel.values:
        filters.channel = raw["channel"]
    if raw["end_reason"] == IN_PROGRESS or raw["end_reason"] in Session.EndReason.values:
        filters.end_reason = raw["end_reason"]
    if raw["date"]:  # one day (the form's older single field, still linked to)
        filters.start = filters.end = _day(raw["date"], errors)
    else:
        filters.start, filters.end = _day(raw["from"], errors), _day(raw["to"], errors)
    if filters.start and filters.end and filters.end < filters.start:
        errors.append("The end date is before the start date.")
        filters.start = filters.end = None
    if raw["success"] in SessionAnalysis.Success.values:
        filters.success = raw["success"]
    filters.data = raw["data"]
    filters.cost_min = _money(raw["cost_min"], errors)
    filters.cost_max = _money(raw["cost_max"], errors)
    if raw["q"]:
        try:
            search.query_words(raw["q"])
        except search.SearchQueryError as problem:
            errors.append(str(problem))
        else:
            filters.search = raw["q"]
    return filters


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def sessions_filtered(
    filters: SessionFilters, *, markup_percent: Decimal = Decimal(0)
) -> QuerySet[Session]:
    """The active tenant's sessions that pass every filter (unordered). A malformed data filter
    is reported in ``filters.errors`` and left out. The cost filters are billed amounts (under
    the plan's ``markup_percent``), compared with the stored provider cost they correspond to."""
    sessions = Session.objects.all()
    if filters.agent_id is not None:
        sessions = sessions.filter(agent_id=filters.agent_id)
    if filters.channel:
        sessions = sessions.filter(channel=filters.channel)
    if filters.end_reason == IN_PROGRESS:
        sessions = sessions.filter(ended_at__isnull=True)
    elif filters.end_reason:
        sessions = sessions.filter(end_reason=filters.end_reason)
    if filters.start:
        sessions = sessions.filter(started_at__gte=_day_start(filters.start))
    if filters.end:
        sessions = sessions.filter(started_at__lt=_day_start(filters.end + timedelta(days=1)))
    if filters.success:
        sessions = analysis.sessions_with_success(sessions, filters.success)
    if filters.data:
        try:
            sessions = analysis.sessions_with_data(sessions, filters.data)
        except ValueError as problem:
            filters.errors.append(str(problem))
    if filters.cost_min is not None or filters.cost_max is not None:
        # A session without a stored cost has had no usage tallied: it counts as free.
        sessions = sessions.alias(
            stored_cost=Coalesce("cost__cost_usd", Value(Decimal(0)), output_field=MONEY)
        )
    if filters.cost_min is not None:
        low = figures.provider_bound(filters.cost_min, markup_percent=markup_percent)
        if low is None:  # a 100 % discount: every session bills zero
            sessions = sessions if filters.cost_min <= 0 else sessions.none()
        else:
            sessions = sessions.filter(stored_cost__gte=low)
    if filters.cost_max is not None:
        high = figures.provider_bound(filters.cost_max, markup_percent=markup_percent)
        if high is not None:
            sessions = sessions.filter(stored_cost__lte=high)
    if filters.search:
        candidates = search.matching_session_ids(filters.search, limit=SEARCH_CANDIDATES)
        if candidates is not None:
            sessions = sessions.filter(pk__in=candidates)
        else:
            matches = search.matching_items(filters.search).filter(session_id=OuterRef("pk"))
            sessions = sessions.filter(Exists(matches))
    return sessions


# --- keyset pages -------------------------------------------------------------------------


def cursor_encode(session: Session) -> str:
    raw = f"{session.started_at.isoformat()}|{session.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def cursor_decode(cursor: str) -> tuple[datetime, int] | None:
    """The (started_at, pk) a cursor names, or None for a malformed one (the first page)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, pk = raw.partition("|")
        started_at = datetime.fromisoformat(moment)
        if started_at.tzinfo is None:
            return None
        return started_at, int(pk)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


@dataclass
class SessionRow:
    session: Session
    cost: Decimal | None  # provider cost (staff only)
    billed: Decimal = Decimal(0)  # what the console shows
    match: TranscriptItem | None = None
    match_marked: str = ""  # the matching line, escaped, its words in <mark>


@dataclass
class SessionPage:
    rows: list[SessionRow]
    next_cursor: str  # "" on the last page
    is_first: bool


def session_page(
    filters: SessionFilters,
    *,
    after: str = "",
    page_size: int | None = None,
    markup_percent: Decimal = Decimal(0),
) -> SessionPage:
    """One page of the filtered sessions, newest first, after the ``after`` cursor; each row's
    billed amount under the plan's ``markup_percent``."""
    page_size = page_size or PAGE_SIZE
    sessions = sessions_filtered(filters, markup_percent=markup_percent).select_related(
        "agent", "analysis", "cost"
    )
    position = cursor_decode(after) if after else None
    if position is not None:
        started_at, pk = position
        sessions = sessions.filter(
            Q(started_at__lt=started_at) | Q(started_at=started_at, pk__lt=pk)
        )
    found = list(sessions.order_by("-started_at", "-pk")[: page_size + 1])
    page, more = found[:page_size], len(found) > page_size
    rows = [SessionRow(session, _stored_cost(session)) for session in page]
    untallied = [row.session.pk for row in rows if row.cost is None]
    if untallied:
        live = sessions_cost_from_events(session_ids=untallied)
        for row in rows:
            if row.cost is None:
                row.cost = live.get(row.session.pk, Decimal(0))
    for row in rows:
        row.billed = figures.billed_amount(row.cost or Decimal(0), markup_percent=markup_percent)
    if filters.search and rows:
        _attach_matches(rows, filters.search)
    return SessionPage(
        rows=rows,
        next_cursor=cursor_encode(page[-1]) if more else "",
        is_first=position is None,
    )


def _stored_cost(session: Session) -> Decimal | None:
    try:
        return session.cost.cost_usd  # type: ignore[attr-defined]
    except Session.cost.RelatedObjectDoesNotExist:  # type: ignore[attr-defined]
        return None


def _attach_matches(rows: list[SessionRow], text: str) -> None:
    """The first matching line of each session on the page (one query)."""
    items = search.matching_items(
        text, items=TranscriptItem.objects.filter(session_id__in=[row.session.pk for row in rows])
    ).order_by("session_id", "sequence", "pk")
    first: dict[int, TranscriptItem] = {}
    for item in items:
        first.setdefault(item.session_id, item)
    for row in rows:
        row.match = first.get(row.session.pk)
        if row.match is not None:
            row.match_marked = search.highlight(row.match.text, text)
