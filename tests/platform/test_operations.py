"""The operator's probes and metrics: /livez, /readyz (/healthz), /metrics.

Against real Daphne processes where a socket is involved (a backend address as Host, plain
http, other processes' samples, a Redis that goes away); the access rule and the journal and
drain hooks in process.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import types
import urllib.error
import urllib.request

import pytest
from django.test import override_settings

from tests.servers import ROOT, Platform, base_environ, stop_process
from tests.services import OwnRedis
from tests.waiting import until_sync

BACKEND_HOST = "10.0.0.7:8001"  # what a load balancer sends: the backend's address


def get(url: str, host: str | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, headers={**(headers or {}), **({"Host": host} if host else {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def readiness(platform: Platform) -> tuple[int, dict]:
    status, body = get(f"{platform.http_url}/readyz", host=BACKEND_HOST)
    return status, json.loads(body)


def sample(exposition: str, name: str, labels: str = "") -> float | None:
    """The value of one sample in a Prometheus text exposition, None if absent."""
    pattern = "^" + re.escape(name) + (re.escape("{" + labels + "}") if labels else "") + r" (\S+)$"
    match = re.search(pattern, exposition, re.MULTILINE)
    return float(match.group(1)) if match else None


def scrape(platform: Platform) -> str:
    status, body = get(f"{platform.http_url}/metrics", host=BACKEND_HOST)
    assert status == 200, body
    return body.decode()


@pytest.fixture
def platform(tmp_path):
    started = Platform(base_environ(tmp_path, VP_READY_WORKER_MAX_AGE_SECONDS="3"), tmp_path)
    yield started
    started.stop()


def test_probes_answer_a_backend_address_and_readiness_waits_for_a_worker(platform):
    status, body = get(f"{platform.http_url}/livez", host=BACKEND_HOST)
    assert (status, json.loads(body)) == (200, {"status": "alive"})
    # The application's own pages still refuse a Host that is not theirs.
    assert get(f"{platform.http_url}/login/", host=BACKEND_HOST)[0] == 400

    # No Celery heartbeat ever: ready during the first-boot grace, then not.
    until_sync(lambda: readiness(platform)[0] == 503, "readiness to give up on the worker")
    status, body = readiness(platform)
    assert body["failed"] == ["worker"]
    assert body["checks"]["worker"] == {
        "ok": False,
        "heartbeat_age_seconds": None,
        "max_age_seconds": 3.0,
    }
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["redis"] == {"ok": True, "configured": False}

    # A worker's heartbeat (what tenants.worker_heartbeat writes) makes it ready; /healthz too.
    platform.shell(
        "from django.utils import timezone; from tenants.models import WorkerHeartbeat\n"
        "WorkerHeartbeat.objects.update_or_create(name='worker', "
        "defaults={'seen_at': timezone.now()})"
    )
    status, body = get(f"{platform.http_url}/healthz", host=BACKEND_HOST)
    assert status == 200, body
    body = json.loads(body)
    assert (body["status"], body["failed"]) == ("ready", [])
    assert 0 <= body["checks"]["worker"]["heartbeat_age_seconds"] < 3


def test_metrics_aggregate_every_process_and_forget_killed_ones(platform):
    # A process that counted and exited: its counter stays in the sum.
    platform.shell(
        "from tenants.metrics import ADMISSIONS_REFUSED\n"
        "ADMISSIONS_REFUSED.labels(code='probe_refusal').inc(3)"
    )
    # A process that holds a live gauge, then dies by kill -9: its sessions stop counting.
    holder = subprocess.Popen(
        [sys.executable, "manage.py", "shell", "-v0", "-c",
         "from tenants.metrics import LIVE_SESSIONS\n"
         "LIVE_SESSIONS.labels(channel='probe').set(2)\n"
         "print('set', flush=True)\n"
         "import sys; sys.stdin.read()"],
        cwd=ROOT, env=platform.environ, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "set"
        # Two messages waiting for a worker (none runs) in the embedded filesystem broker.
        platform.shell(
            "from tenants.tasks import worker_heartbeat\n"
            "worker_heartbeat.delay(); worker_heartbeat.delay()"
        )
        exposition = scrape(platform)
        assert sample(exposition, "vp_admissions_refused_total", 'code="probe_refusal"') == 3.0
        assert sample(exposition, "vp_live_sessions", 'channel="probe"') == 2.0
        assert sample(exposition, "vp_celery_queue_depth", 'queue="celery"') == 2.0
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        stop_process(holder)
    exposition = scrape(platform)
    assert sample(exposition, "vp_live_sessions", 'channel="probe"') is None
    assert sample(exposition, "vp_admissions_refused_total", 'code="probe_refusal"') == 3.0


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, so that stopping it touches nobody else."""
    started = OwnRedis(tmp_path)
    yield started
    started.stop()


def test_readiness_fails_when_redis_goes_and_the_queue_depth_reads_the_prefixed_keys(
    tmp_path, own_redis
):
    import redis

    url = own_redis.url
    environ = base_environ(tmp_path, REDIS_URL=url, VP_REDIS_PREFIX="opstest")
    platform = Platform(environ, tmp_path)
    try:
        status, body = readiness(platform)
        assert (status, body["checks"]["redis"]) == (200, {"ok": True}), body
        platform.shell(
            "from tenants.tasks import worker_heartbeat\n"
            "for _ in range(3): worker_heartbeat.delay()"
        )
        assert sample(scrape(platform), "vp_celery_queue_depth", 'queue="celery"') == 3.0
        with redis.Redis.from_url(url) as client:  # under the deployment's prefix
            assert client.llen("opstest:celery:celery") == 3

        own_redis.stop()
        status, body = readiness(platform)
        assert status == 503
        assert body["failed"] == ["redis"]
        assert body["checks"]["redis"]["ok"] is False
        # The scrape still answers; the broker's figure is left out rather than made up.
        assert sample(scrape(platform), "vp_celery_queue_depth", 'queue="celery"') is None
    finally:
        platform.stop()


# --- in process: the access rule and the hooks other parts of the platform provide -----------


@pytest.fixture
def without_hooks(monkeypatch):
    """As before the journal and drain exist: nothing starts a journal in the test process."""
    monkeypatch.setitem(sys.modules, "agents.journal", None)
    monkeypatch.setitem(sys.modules, "agents.drain", None)


@pytest.mark.django_db
@override_settings(VP_METRICS_TOKEN="s3cret-scrape-token")
def test_metrics_with_a_token_need_it(client, without_hooks):
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer not-it")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"] == 'Bearer realm="metrics"'
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token")
    assert right.status_code == 200
    assert b"# TYPE vp_celery_queue_depth gauge" in right.content


@pytest.mark.django_db
@override_settings(VP_METRICS_TOKEN="", VP_METRICS_ALLOWED_NETWORKS=["10.0.0.0/8"])
def test_metrics_without_a_token_serve_only_the_allowed_networks(client, without_hooks):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.9").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.3.2.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.3.2.1").status_code == 200


def _module(name: str, **functions) -> types.ModuleType:
    module = types.ModuleType(name)
    for function_name, value in functions.items():
        setattr(module, function_name, lambda value=value: value)
    return module


@pytest.mark.django_db
@override_settings(VP_READY_WORKER_MAX_AGE_SECONDS=0)
def test_readiness_reports_the_journal_and_fails_while_draining(client, monkeypatch, without_hooks):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["journal"] == {"ok": True, "present": False}
    assert response.json()["checks"]["draining"] == {"ok": True, "present": False}

    monkeypatch.setitem(
        sys.modules, "agents.journal", _module("agents.journal", accepting=True, depth=4, orphans=1)
    )
    monkeypatch.setitem(sys.modules, "agents.drain", _module("agents.drain", draining=True))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["draining"]
    assert response.json()["checks"]["journal"] == {"ok": True, "depth": 4, "orphans": 1}
    assert response.json()["checks"]["draining"] == {"ok": False, "draining": True}

    monkeypatch.setitem(
        sys.modules, "agents.journal", _module("agents.journal", accepting=False, depth=9000)
    )
    monkeypatch.setitem(sys.modules, "agents.drain", _module("agents.drain", draining=False))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["failed"] == ["journal"]
    assert response.json()["checks"]["journal"] == {"ok": False, "depth": 9000, "orphans": None}


@pytest.mark.django_db
def test_a_failing_hook_is_not_ready_and_names_only_the_error_class(
    client, monkeypatch, without_hooks
):
    def broken() -> bool:
        raise OSError("/var/lib/secret/path unreadable")

    drain = types.ModuleType("agents.drain")
    drain.draining = broken
    monkeypatch.setitem(sys.modules, "agents.drain", drain)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "draining" in response.json()["failed"]
    assert response.json()["checks"]["draining"] == {"ok": False, "error": "OSError"}
    assert b"secret" not in response.content


@pytest.mark.django_db(transaction=True)
def test_database_pool_waits_are_counted():
    from django.db import connections

    from tenants import metrics as platform_metrics

    pool = getattr(connections["default"], "pool", None)
    if pool is None:
        pytest.skip("Django's connection pool is used on PostgreSQL (DATABASE_URL) only")
    from psycopg_pool import PoolTimeout

    pool.open()
    held = []
    with contextlib.suppress(PoolTimeout):  # every connection the test's own does not hold
        while True:
            held.append(pool.getconn(timeout=0.5))
    platform_metrics.db_pool_sample()  # what came before, the filling above included
    waits_before = platform_metrics.DB_POOL_WAITS._value.get()
    # (A request that timed out stays in psycopg_pool's waiting count for a while.)
    waiting_before = pool.get_stats().get("requests_waiting", 0)
    waiter = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=30)))
    try:
        waiter.start()
        until_sync(
            lambda: pool.get_stats().get("requests_waiting", 0) == waiting_before + 1,
            "a request to wait",
        )
        pool.putconn(held.pop())
        waiter.join(timeout=30)
    finally:
        for connection in held:
            pool.putconn(connection)
    platform_metrics.db_pool_sample()
    assert platform_metrics.DB_POOL_WAITS._value.get() == waits_before + 1
    assert platform_metrics.DB_POOL_WAIT_SECONDS._value.get() > 0


async def test_a_real_session_shows_in_the_metrics(platform):
    """Live sessions, the upstream's connect time and a dropped frame, as a scrape sees them."""
    import asyncio

    import websockets

    headers = {"Authorization": f"Bearer {platform.seed['api_key']}"}
    url = f"{platform.ws_url}/v1/realtime?model=gpt-realtime-mini"
    async with websockets.connect(url, additional_headers=headers, max_size=None) as connection:
        assert json.loads(await connection.recv())["type"] == "session.created"
        exposition = await asyncio.to_thread(scrape, platform)
        assert sample(exposition, "vp_live_sessions", 'channel="api"') == 1.0
        assert sample(exposition, "vp_upstream_connect_seconds_count") >= 1.0
        # Audio faster than real time: the relay drops frames (and says so) instead of
        # forwarding them; the client stops at the first such error, short of a flood.
        chunk = json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 16000})
        codes: list[str] = []

        async def read() -> None:
            while "audio_rate_exceeded" not in codes:
                event = json.loads(await connection.recv())
                if event["type"] == "error":
                    codes.append(event["error"]["code"])

        reader = asyncio.create_task(read())
        for _ in range(400):
            if reader.done():
                break
            await connection.send(chunk)
            await asyncio.sleep(0.005)
        await asyncio.wait_for(reader, 15)
    dropped = sample(
        await asyncio.to_thread(scrape, platform),
        "vp_dropped_frames_total",
        'reason="audio_rate_exceeded"',
    )
    assert dropped and dropped >= 1.0

    def ended() -> bool:
        return sample(scrape(platform), "vp_live_sessions", 'channel="api"') == 0.0

    await asyncio.to_thread(until_sync, ended, "the live sessions gauge back to 0")
