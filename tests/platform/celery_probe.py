"""A task for the redelivery tests, loaded into real workers with ``celery worker -I``.

It notes each run (worker node and pid), then holds until the test releases it, so that the test
can kill the process running it mid-task.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import shared_task


@shared_task(
    bind=True,
    name="tests.hold_until_released",
    ignore_result=True,
    time_limit=120,
    soft_time_limit=110,
)
def hold_until_released(self, directory: str) -> None:
    folder = Path(directory)
    with open(folder / "runs", "a") as runs:
        runs.write(f"{self.request.hostname} {os.getpid()}\n")
        runs.flush()
        os.fsync(runs.fileno())
    while not (folder / "release").exists():
        time.sleep(0.05)
    (folder / "done").write_text(f"{self.request.hostname} {os.getpid()}\n")
