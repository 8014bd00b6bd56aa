"""``/metrics``: the Prometheus exposition of every process on this host.

Each process (Daphne, Celery) writes its samples to files in ``VP_METRICS_DIR``
(``tenants.metrics``); a scrape of any one web process aggregates them all
(``MultiProcessCollector``), so scrape one web process per host. What is a state rather than an
event is read at scrape time: the Celery queue's depth (from the broker, key prefix and priority
queues included: kombu counts them) and the messages workers hold unacknowledged (Redis). The
journal's depth is a gauge each process sets (``agents.journal``); the scraping process
refreshes its own from ``agents.journal.depth()`` first.

Access: with ``VP_METRICS_TOKEN`` set, only ``Authorization: Bearer <token>``; without it, only
clients in ``VP_METRICS_ALLOWED_NETWORKS`` (loopback by default). Behind a proxy the client
address is the one Daphne takes from ``X-Forwarded-For`` (``--proxy-headers``): the proxy must
overwrite that header, as ``deploy/nginx.conf`` does.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import logging
import os
import re
from collections.abc import Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from tenants import metrics as platform_metrics
from voiceplatform.health import hook

logger = logging.getLogger(__name__)

LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def metrics(request: HttpRequest) -> HttpResponse:
    refusal = scrape_refusal(request)
    if refusal is not None:
        return refusal
    forget_dead_processes()
    depth = hook("agents.journal", "depth")
    if depth is not None:
        try:
            platform_metrics.JOURNAL_DEPTH.set(depth())
        except Exception:
            logger.exception("could not read the journal's depth")
    try:
        platform_metrics.db_pool_sample()
    except Exception:
        logger.exception("could not sample the database pool")
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(BrokerCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def scrape_refusal(request: HttpRequest) -> HttpResponse | None:
    token = settings.VP_METRICS_TOKEN
    if token:
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return None
        response = HttpResponse("a bearer token is required\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if client_allowed(request.META.get("REMOTE_ADDR", ""), settings.VP_METRICS_ALLOWED_NETWORKS):
        return None
    return HttpResponse("metrics are not served to this address\n", status=403)


def client_allowed(address: str, networks: list[str]) -> bool:
    try:
        client = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped:
        client = client.ipv4_mapped
    return any(client in ipaddress.ip_network(network, strict=False) for network in networks)


def forget_dead_processes() -> None:
    """Drop the live gauges of processes that died without exiting (kill -9, OOM): otherwise a
    crashed Daphne's sessions would count as live until the directory is wiped."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    pids = set()
    for path in glob.glob(os.path.join(directory, "gauge_live*.db")):
        match = LIVE_GAUGE_FILE.search(os.path.basename(path))
        if match:
            pids.add(int(match.group(1)))
    for pid in pids:
        if not process_alive(pid):
            mark_process_dead(pid, directory)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class BrokerCollector(Collector):
    """The Celery broker's state, read at each scrape."""

    def collect(self) -> Iterator[Metric]:
        from voiceplatform.celery import app

        queue = app.conf.task_default_queue
        depth = GaugeMetricFamily(
            "vp_celery_queue_depth", "Celery messages waiting in the broker.", labels=["queue"]
        )
        unacked = GaugeMetricFamily(
            "vp_celery_unacknowledged",
            "Celery messages taken by a worker and not yet acknowledged (Redis broker); after a "
            "worker's main process dies they return to the queue once the visibility timeout "
            "passes.",
        )
        try:
            with app.connection_for_read() as connection:
                channel = connection.default_channel
                # A declare answers the message count (every priority level, the key prefix
                # applied); the queue exists already, declaring it again changes nothing.
                declared = channel.queue_declare(queue=queue, durable=True, auto_delete=False)
                depth.add_metric([queue], declared.message_count)
                if hasattr(channel, "unacked_key"):
                    unacked.add_metric([], channel.client.hlen(channel.unacked_key))
        except Exception as error:  # noqa: BLE001 - a broker outage must not fail the scrape
            logger.warning("could not read the Celery broker: %s", type(error).__name__)
            return
        yield depth
        if unacked.samples:
            yield unacked
