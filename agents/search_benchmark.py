"""How fast the console's session search answers on the current database.

Each query runs what the session list runs for it (``session_selectors.session_page``: the
filtered, searched first page with its cost column and matching lines), ``repeat`` times after
one warm-up, timed end to end through the ORM. ``manage.py bench_search`` prints the figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.db import connection

from agents import session_selectors
from agents.analytics import percentile
from agents.models import Session
from tenants.models import Tenant
from tenants.scoping import tenant_scope

# A common word, a product (a few percent of sessions), two words, a prefix, two words of one
# line, an order number (random: one session or none), a word nobody said.
QUERIES = ("order", "blender", "refund kettle", "headph", "address lisbon", "A004217", "zeppelin")


@dataclass(frozen=True)
class QueryTiming:
    query: str
    rows: int
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class BenchResult:
    vendor: str
    sessions: int
    timings: list[QueryTiming]
    p50_ms: float
    p95_ms: float


def _timed_page(query: str) -> tuple[float, int]:
    filters = session_selectors.session_filters_parse({"q": query})
    began = time.perf_counter()
    page = session_selectors.session_page(filters)
    return (time.perf_counter() - began) * 1000, len(page.rows)


def search_benchmark(
    *, tenant: Tenant, queries: tuple[str, ...] = QUERIES, repeat: int = 20
) -> BenchResult:
    timings, every = [], []
    with tenant_scope(tenant):
        sessions = Session.objects.count()
        for query in queries:
            _timed_page(query)  # warm-up: the first run pays for the plan and cold pages
            runs, rows = [], 0
            for _ in range(repeat):
                elapsed, rows = _timed_page(query)
                runs.append(elapsed)
            every.extend(runs)
            timings.append(
                QueryTiming(query, rows, percentile(runs, 0.5) or 0, percentile(runs, 0.95) or 0)
            )
    return BenchResult(
        vendor=connection.vendor,
        sessions=sessions,
        timings=timings,
        p50_ms=percentile(every, 0.5) or 0,
        p95_ms=percentile(every, 0.95) or 0,
    )
