"""The platform's Prometheus metrics (``prometheus-client``, multi-process safe).

Here, in the bottom layer, because every app counts something (agents, billing, tenants).

Every Daphne process (and Celery worker) writes its samples to files in ``VP_METRICS_DIR``;
``/metrics`` aggregates them (``MultiProcessCollector``). The directory must be known before
``prometheus_client`` creates its first value, so this module sets ``PROMETHEUS_MULTIPROC_DIR``
from the settings before importing it; import metrics from here, never from
``prometheus_client`` directly.

Names are the contract with dashboards: change them only with the README's list.
"""

from __future__ import annotations

import os

from django.conf import settings

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.VP_METRICS_DIR))
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import Counter, Gauge, Histogram  # noqa: E402

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
