"""Probes for load balancers and orchestrators, answered on plain http whatever the Host.

* ``/livez``: the process answers. No I/O: a slow database must not get a healthy process
  restarted. Stays 200 while the process drains.
* ``/readyz`` (``/healthz`` is its old name): may this process be sent new sessions? 200 when
  every check passes, else 503; the JSON body names each check and ``failed`` lists those that did
  not pass:

  - ``database``: ``SELECT 1`` through the process's own connection (pool);
  - ``redis`` (when ``REDIS_URL`` is set): a ``PING`` with a one-second timeout;
  - ``worker``: the Celery heartbeat (``tenants.worker_heartbeat``, scheduled by beat) is at most
    ``VP_READY_WORKER_MAX_AGE_SECONDS`` old. A database that has never seen one is "not ready"
    once this process has been up that long: a fresh deployment gets that grace to run its first
    beat, and no longer;
  - ``journal``: ``agents.journal.accepting()`` (the usage journal has room; past its bound new
    sessions are refused) with ``depth()`` and ``orphans()`` reported;
  - ``draining``: ``agents.drain.draining()`` is false (a process that received SIGTERM takes no
    new sessions).

  The journal and drain hooks are looked up when a probe runs; a module or function that is not
  there is reported as ``"present": false`` and passes.

``voiceplatform.middleware.ProbeMiddleware`` routes the paths here before any other middleware.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from tenants.models import WorkerHeartbeat

PROCESS_STARTED = time.monotonic()
REDIS_TIMEOUT_SECONDS = 1.0

CheckResult = dict[str, Any]


def livez(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "alive"})


def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness_checks()
    failed = [name for name, result in checks.items() if not result["ok"]]
    body = {"status": "not ready" if failed else "ready", "failed": failed, "checks": checks}
    return JsonResponse(body, status=503 if failed else 200)


def readiness_checks() -> dict[str, CheckResult]:
    return {
        "database": _guarded(check_database),
        "redis": _guarded(check_redis),
        "worker": _guarded(check_worker),
        "journal": _guarded(check_journal),
        "draining": _guarded(check_draining),
    }


def _guarded(check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    except Exception as error:  # noqa: BLE001 - any failure of a dependency means "not ready"
        # The class only: messages may carry addresses or credentials.
        return {"ok": False, "error": type(error).__name__}


def check_database() -> CheckResult:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return {"ok": True}


def check_redis() -> CheckResult:
    if not settings.REDIS_URL:
        return {"ok": True, "configured": False}
    redis_client().ping()
    return {"ok": True}


@cache
def redis_client() -> Any:
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )


def check_worker() -> CheckResult:
    max_age = settings.VP_READY_WORKER_MAX_AGE_SECONDS
    heartbeat = WorkerHeartbeat.objects.filter(name="worker").first()
    if heartbeat is None:
        waited = time.monotonic() - PROCESS_STARTED
        in_grace = not max_age or waited < max_age
        return {"ok": in_grace, "heartbeat_age_seconds": None, "max_age_seconds": max_age}
    age = round((timezone.now() - heartbeat.seen_at).total_seconds(), 3)
    return {
        "ok": not max_age or age <= max_age,
        "heartbeat_age_seconds": age,
        "max_age_seconds": max_age,
    }


def check_journal() -> CheckResult:
    accepting = hook("agents.journal", "accepting")
    if accepting is None:
        return {"ok": True, "present": False}
    result: CheckResult = {"ok": bool(accepting())}
    for name in ("depth", "orphans"):
        counter = hook("agents.journal", name)
        result[name] = int(counter()) if counter else None
    return result


def check_draining() -> CheckResult:
    draining = hook("agents.drain", "draining")
    if draining is None:
        return {"ok": True, "present": False}
    now_draining = bool(draining())
    return {"ok": not now_draining, "draining": now_draining}


def hook(module: str, name: str) -> Callable[[], Any] | None:
    """``module.name`` if both exist (built by other parts of the platform), else None.

    Imported when called, not at start-up, so this module works before, and without, them;
    an ImportError inside an existing module is not hidden.
    """
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise
        return None
    function = getattr(found, name, None)
    return function if callable(function) else None
