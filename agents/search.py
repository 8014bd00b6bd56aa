"""Full-text search over transcript lines: PostgreSQL full-text search, or SQLite FTS5.

The index is made by migration ``agents.0015_transcript_search``: on PostgreSQL the
``search_vector`` column (``to_tsvector('simple', text)``, kept by a trigger) under a GIN index;
on SQLite an FTS5 table kept in step by triggers. The ``simple``
configuration neither stems nor drops stop words: transcripts come in any language, and a word
stemmed by the wrong language's rules would not be found.

A query is words; every word must be in the line (AND), and the last word matches as a prefix
on SQLite and PostgreSQL alike, so that a half-typed word already finds something. Quotes and
operators typed by the user are taken as plain words: bad input never reaches the database as
syntax.
"""

from __future__ import annotations

import re

from django.contrib.postgres.search import SearchQuery
from django.db import connection
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from agents.models import TranscriptItem

SQLITE_TABLE = "agents_transcript_fts"
PG_INDEX_NAME = "transcript_search"
SEARCH_CONFIG = "simple"
MAX_QUERY_WORDS = 8
MAX_QUERY_CHARS = 200

_WORD = re.compile(r"\w+", re.UNICODE)


class SearchQueryError(ValueError):
    """The search text has nothing to search for."""


def query_words(text: str) -> list[str]:
    """The words of a search text, lower-cased, at most ``MAX_QUERY_WORDS``."""
    words = _WORD.findall(text[:MAX_QUERY_CHARS].lower())
    if not words:
        raise SearchQueryError("Type a word to search the transcripts for.")
    return words[:MAX_QUERY_WORDS]


def _pg_tsquery(words: list[str]) -> str:
    # Words are \w+ only: nothing in them is tsquery syntax.
    return " & ".join([*words[:-1], f"{words[-1]}:*"])


def _fts5_query(words: list[str]) -> str:
    # Each word a quoted string (no FTS5 operator survives), the last one a prefix.
    quoted = [f'"{word}"' for word in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def matching_items(text: str, *, items: QuerySet | None = None) -> QuerySet:
    """Transcript items (of the active tenant scope) whose text matches ``text``."""
    words = query_words(text)
    items = items if items is not None else TranscriptItem.objects.all()
    if connection.vendor == "postgresql":
        return items.filter(
            search_vector=SearchQuery(_pg_tsquery(words), config=SEARCH_CONFIG, search_type="raw")
        )
    if connection.vendor == "sqlite":
        matches = RawSQL(
            f"SELECT rowid FROM {SQLITE_TABLE} WHERE {SQLITE_TABLE} MATCH %s",  # noqa: S608
            [_fts5_query(words)],
        )
        return items.filter(pk__in=matches)
    # Another database: a plain scan, correct but unindexed.
    for word in words:
        items = items.filter(text__icontains=word)
    return items


def matching_session_ids(text: str, *, limit: int) -> list[int] | None:
    """The ids of the sessions with a line matching ``text``, straight from the index; None
    when more than ``limit`` lines match (a common word).

    Why the list: given the search as a correlated EXISTS, the planner of PostgreSQL guesses
    how many lines match a prefix, and for a rare word it walks every session newest first
    probing each (a quarter of a second at 10,000 sessions, linear after that). A few matches
    are fetched from the index and filtered by id instead; many matches are dense, so that
    walk finds a page of them quickly and is what the caller runs then. The probe reads at
    most ``limit + 1`` lines, unordered and not made distinct, so that a common word costs a
    short read, not a pass over all its matches.
    """
    lines = list(matching_items(text).order_by().values_list("session_id", flat=True)[: limit + 1])
    if len(lines) > limit:
        return None
    return list(dict.fromkeys(lines))


def highlight(text: str, query: str) -> SafeString:
    """``text`` HTML-escaped, the words of ``query`` (and words they begin) in ``<mark>``."""
    try:
        words = query_words(query)
    except SearchQueryError:
        return escape(text)
    pattern = re.compile(
        r"\b(?:" + "|".join(re.escape(word) for word in words) + r")\w*",
        re.IGNORECASE | re.UNICODE,
    )
    parts = []
    position = 0
    for match in pattern.finditer(text):
        parts.append(escape(text[position : match.start()]))
        parts.append(f"<mark>{escape(match.group(0))}</mark>")
        position = match.end()
    parts.append(escape(text[position:]))
    return mark_safe("".join(parts))  # noqa: S308 - every piece is escaped above
