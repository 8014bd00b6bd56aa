"""Late acknowledgement with real workers: a task whose process dies mid-run is run again.

The workers are real ``celery worker`` processes (prefork pool, one child) with the platform's
settings, and a probe task (``tests/platform/celery_probe.py``) that holds until released, so
the test kills exactly the process that runs it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.run_isolation import REDIS_PREFIX, redis_url
from tests.servers import manage, stop_process
from tests.waiting import until_sync

ROOT = Path(__file__).resolve().parents[2]


def worker_environ(tmp_path: Path, broker: str, **extra: str) -> dict[str, str]:
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("VP_", "DATABASE", "REDIS"))
    }
    environ["VP_DATA_DIR"] = str(tmp_path)
    if broker == "redis":
        require_service("Redis", "127.0.0.1", 6379)
        # A prefix of its own: no other test's messages in this queue (the run's cleanup
        # deletes every key under REDIS_PREFIX).
        environ["REDIS_URL"] = redis_url()
        environ["VP_REDIS_PREFIX"] = f"{REDIS_PREFIX}:redelivery{secrets.token_hex(3)}"
    environ.update(extra)
    return environ


class Workers:
    """Celery worker processes, each in its own process group (main process and pool child)."""

    def __init__(self, environ: dict[str, str], tmp_path: Path) -> None:
        self.environ = environ
        self.log_path = tmp_path / "workers.log"
        self.log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> None:
        self.processes[name] = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "voiceplatform", "worker",
                "--pool", "prefork", "--concurrency", "1", "-n", f"{name}@%h",
                "-I", "tests.platform.celery_probe", "--without-mingle", "--without-gossip",
                "--loglevel", "INFO",
            ],
            cwd=ROOT, env=self.environ, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, *names: str) -> None:
        def ready() -> bool:
            self.log.flush()
            lines = self.log_path.read_text().splitlines()
            announced = [line for line in lines if line.endswith(" ready.")]
            return all(any(f" {name}@" in line for line in announced) for name in names)

        until_sync(ready, f"workers {names} to be ready", timeout=60)

    def kill(self, name: str) -> None:
        """kill -9 a worker's main process and its pool child at once."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            stop_process(process)
        self.log.close()

    def log_tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text()[-4000:]


@pytest.fixture
def probe_folder(tmp_path):
    folder = tmp_path / "probe"
    folder.mkdir()
    return folder


def runs(folder: Path) -> list[tuple[str, int]]:
    path = folder / "runs"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(node.split("@")[0], int(pid)) for node, pid in (line.split() for line in lines)]


def enqueue_probe(environ: dict[str, str], folder: Path) -> None:
    manage(
        environ,
        "shell",
        "-c",
        "from tests.platform.celery_probe import hold_until_released\n"
        f"hold_until_released.delay({str(folder)!r})",
    )


@pytest.mark.parametrize(
    "broker", ["filesystem", pytest.param("redis", marks=pytest.mark.services)]
)
def test_a_task_whose_pool_child_is_killed_runs_again(tmp_path, probe_folder, broker):
    environ = worker_environ(tmp_path, broker)
    workers = Workers(environ, tmp_path)
    try:
        workers.start("worker1")
        enqueue_probe(environ, probe_folder)
        until_sync(lambda: runs(probe_folder), "the task to start", timeout=60)
        (_, child), *_ = runs(probe_folder)
        assert child != workers.processes["worker1"].pid  # the pool child, not the main process
        os.kill(child, signal.SIGKILL)
        (probe_folder / "release").touch()
        try:
            until_sync(lambda: (probe_folder / "done").exists(), "the task to run again", 60)
        except AssertionError:
            raise AssertionError(workers.log_tail()) from None
        first, second = runs(probe_folder)
        assert first[1] != second[1]  # a new pool child ran it
        assert (probe_folder / "done").read_text().split()[1] == str(second[1])
    finally:
        workers.stop()


@pytest.mark.services
def test_a_task_whose_worker_is_killed_runs_on_another_after_the_visibility_timeout(
    tmp_path, probe_folder
):
    environ = worker_environ(
        tmp_path,
        "redis",
        VP_CELERY_VISIBILITY_TIMEOUT="5",
        VP_CELERY_TASK_TIME_LIMIT="2",
    )
    workers = Workers(environ, tmp_path)
    try:
        workers.start("worker1")
        workers.start("worker2")
        # Both consuming before the message exists: it must not wait out the timeout unstarted.
        workers.wait_ready("worker1", "worker2")
        enqueue_probe(environ, probe_folder)
        until_sync(lambda: runs(probe_folder), "the task to start", timeout=60)
        (node, _), *_ = runs(probe_folder)
        workers.kill(node)  # main process and child: nothing acknowledges or rejects it
        (probe_folder / "release").touch()
        survivor = "worker2" if node == "worker1" else "worker1"
        try:
            # 5 s visibility timeout, then the survivor's next sweep (every 10 s).
            until_sync(lambda: (probe_folder / "done").exists(), "the task to run again", 60)
        except AssertionError:
            raise AssertionError(workers.log_tail()) from None
        assert [run[0] for run in runs(probe_folder)] == [node, survivor]
    finally:
        workers.stop()


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_procfile_workers_have_names_of_their_own_and_one_beat():
    processes = procfile()
    workers = [command for command in processes.values() if " worker " in command]
    names = [re.search(r" -n (\S+)", command) for command in workers]
    assert len(workers) >= 2
    assert all(names), workers
    assert len({name.group(1) for name in names if name}) == len(workers)
    assert all(name.group(1).endswith("@%h") for name in names if name)
    assert sum(" beat " in command for command in processes.values()) == 1
