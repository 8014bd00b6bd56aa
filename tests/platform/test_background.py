"""Real Celery processes (beat → broker → worker → database), embedded and on Redis."""

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.run_isolation import REDIS_PREFIX, redis_url

ROOT = Path(__file__).resolve().parents[2]


def base_env(tmp_path, **extra):
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("VP_", "DATABASE", "REDIS"))
    }
    environ.update({"VP_DATA_DIR": str(tmp_path), "VP_HEARTBEAT_SECONDS": "1", **extra})
    return environ


def wait_for_heartbeat(database: Path, processes, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            assert process.poll() is None, process.args
        try:
            with sqlite3.connect(database) as connection:
                row = connection.execute(
                    "SELECT seen_at FROM tenants_workerheartbeat WHERE name = 'worker'"
                ).fetchone()
        except sqlite3.OperationalError:
            row = None
        if row:
            return row[0]
        time.sleep(0.5)
    raise AssertionError("no heartbeat reached the database")


def run_worker_and_beat(tmp_path, environ):
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT, env=environ, check=True, timeout=120,
    )  # fmt: skip
    celery = [sys.executable, "-m", "celery", "-A", "voiceplatform"]
    log = open(tmp_path / "celery.log", "w")  # noqa: SIM115 - closed in the finally below
    processes = [
        subprocess.Popen(
            [*celery, "worker", "--pool", "solo", "--loglevel", "INFO"],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ),
        subprocess.Popen(
            [*celery, "beat", "--schedule", str(tmp_path / "beat-schedule"), "--loglevel", "INFO"],
            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ),
    ]  # fmt: skip
    try:
        seen_at = wait_for_heartbeat(tmp_path / "voiceplatform.sqlite3", processes)
    except AssertionError:
        log.flush()
        raise AssertionError((tmp_path / "celery.log").read_text()[-3000:]) from None
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=20)
        log.close()
    return seen_at


def test_embedded_worker_and_beat_need_no_server(tmp_path):
    environ = base_env(tmp_path)
    assert run_worker_and_beat(tmp_path, environ)
    # The filesystem broker kept its messages in the data folder.
    assert (tmp_path / "broker" / "queue").is_dir()


@pytest.mark.services
def test_worker_and_beat_on_redis(tmp_path):
    require_service("Redis", "127.0.0.1", 6379)
    environ = base_env(tmp_path, REDIS_URL=redis_url(), VP_REDIS_PREFIX=REDIS_PREFIX)
    assert run_worker_and_beat(tmp_path, environ)
