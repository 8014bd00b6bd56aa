"""The platform's Prometheus metrics (``prometheus-client``, multi-process safe).

Here, in the bottom layer, because every app counts something (agents, billing, tenants).

Every Daphne process (and Celery worker) writes its samples to files in ``VP_METRICS_DIR``;
``/metrics`` aggregates them (``MultiProcessCollector``). The directory must be known before
``prometheus_client`` creates its first value, so this module sets ``PROMETHEUS_MULTIPROC_DIR``
from the settings before importing it; import metrics from here, never from
``prometheus_client`` directly.

Names are the contract with dashboards: change them only with the README's list.

A process that exits removes its live gauges' files (``mark_process_dead``); the scrape does the
same for processes that died without exiting (kill -9), so their sessions stop counting.
Some values are read at scrape time instead of counted (``voiceplatform.metrics``): the Celery
queue's depth and the messages workers hold; the scraping process also refreshes its own
``vp_journal_depth`` from ``agents.journal.depth()`` (every process sets its own; the sum is the
host's).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading

from django.conf import settings

# Assigned, not defaulted: a child process with a VP_METRICS_DIR of its own must not inherit its
# parent's directory.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.VP_METRICS_DIR)
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import Counter, Gauge, Histogram, multiprocess  # noqa: E402

logger = logging.getLogger(__name__)

LIVE_SESSIONS = Gauge(
    "vp_live_sessions", "Realtime sessions open now.", ["channel"], multiprocess_mode="livesum"
)
ADMISSIONS_REFUSED = Counter(
    "vp_admissions_refused", "New sessions refused, by refusal code.", ["code"]
)
UPSTREAM_CONNECT_FAILURES = Counter(
    "vp_upstream_connect_failures", "Upstream (provider) connects that failed.", ["reason"]
)
UPSTREAM_CONNECT_SECONDS = Histogram(
    "vp_upstream_connect_seconds",
    "Time to open an upstream session (until session.updated).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
)
DROPPED_FRAMES = Counter(
    "vp_dropped_frames", "Frames the relay dropped instead of forwarding.", ["reason"]
)
RECORDINGS = Counter(
    "vp_recordings",
    "Session recordings finished, by outcome (ready, dropped, failed).",
    ["outcome"],
)
JOURNAL_DEPTH = Gauge(
    "vp_journal_depth",
    "Usage records and session ends on local disk, not yet in the database.",
    multiprocess_mode="livesum",
)
CHANNEL_LAYER_ERRORS = Counter(
    "vp_channel_layer_errors", "Channel-layer (Redis) operations that failed.", ["operation"]
)
DRAINING = Gauge(
    "vp_draining", "1 while this process drains before exiting.", multiprocess_mode="livemax"
)

# The web processes' PostgreSQL pool (psycopg_pool statistics, sampled every few seconds).
DB_POOL_WAITS = Counter(
    "vp_db_pool_waits", "Database connection requests that had to wait for a pooled connection."
)
DB_POOL_WAIT_SECONDS = Counter(
    "vp_db_pool_wait_seconds", "Time database connection requests spent waiting for the pool."
)
DB_POOL_ERRORS = Counter(
    "vp_db_pool_errors", "Database connection requests that failed (pool timeout, queue full)."
)
DB_POOL_REQUESTS_WAITING = Gauge(
    "vp_db_pool_requests_waiting",
    "Database connection requests waiting for the pool now.",
    multiprocess_mode="livesum",
)

DB_POOL_SAMPLE_SECONDS = 5.0
_sampler_lock = threading.Lock()
_sampler_started = False


def db_pool_sample() -> None:
    """Move the pool's statistics since the last sample into the shared counters."""
    from django.db import connections

    pool = getattr(connections["default"], "pool", None)
    if pool is None:
        return
    stats = pool.pop_stats()  # counters since the last call, reset; gauges as of now
    DB_POOL_WAITS.inc(stats.get("requests_queued", 0))
    DB_POOL_WAIT_SECONDS.inc(stats.get("requests_wait_ms", 0) / 1000)
    DB_POOL_ERRORS.inc(stats.get("requests_errors", 0))
    DB_POOL_REQUESTS_WAITING.set(stats.get("requests_waiting", 0))


def db_pool_sampler_start() -> None:
    """Sample this process's pool in a daemon thread (once per process; no pool, no thread)."""
    global _sampler_started
    if "pool" not in settings.DATABASES["default"].get("OPTIONS", {}):
        return
    with _sampler_lock:
        if _sampler_started:
            return
        _sampler_started = True
    threading.Thread(target=_db_pool_sampler, name="vp-db-pool-metrics", daemon=True).start()


def _db_pool_sampler() -> None:
    stop = threading.Event()
    while not stop.wait(DB_POOL_SAMPLE_SECONDS):
        try:
            db_pool_sample()
        except Exception:
            logger.exception("could not sample the database pool")


@atexit.register
def _mark_process_dead() -> None:
    multiprocess.mark_process_dead(os.getpid())
