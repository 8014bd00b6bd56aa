"""The probes' door: the first middleware, so that health checks and scrapes work as load
balancers and Prometheus send them.

A load balancer calls a backend on plain http with the backend's address as Host. Further down
the chain ``SecurityMiddleware`` would redirect that to https (301) and ``CommonMiddleware``
would validate the Host against ``ALLOWED_HOSTS`` (400, a ``DisallowedHost`` traceback in the
log). Answering here, before both, is simpler and narrower than exempting the paths from each
(``SECURE_REDIRECT_EXEMPT`` covers the redirect only; host validation has no exemption). The
probe views read no Host, set no cookie and render no URL, so skipping those checks exposes
nothing; ``/metrics`` has its own access rule (token or network).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from tenants import metrics as platform_metrics
from voiceplatform.health import livez, readyz
from voiceplatform.metrics import metrics

PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "/livez": livez,
    "/readyz": readyz,
    "/healthz": readyz,
    "/metrics": metrics,
}


class ProbeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # Every web process loads its middleware once: its database pool's waits are sampled
        # into the shared metrics from then on.
        platform_metrics.db_pool_sampler_start()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is None or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        return probe(request)
