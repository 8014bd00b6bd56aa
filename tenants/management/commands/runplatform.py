"""Run the whole embedded platform in the foreground: the web server (production's,
``python -m voiceplatform.serve``: uvicorn on uvloop), a Celery worker and Celery beat.

Ctrl-C (or SIGTERM) stops all three; if one of them dies, the others are stopped too, so that a
half-running platform never goes unnoticed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


def platform_commands(*, host: str, port: int, server: str = "uvicorn") -> dict[str, list[str]]:
    python = sys.executable
    return {
        "web": [
            # What the Procfile runs (frame limits from VP_WS_MAX_MESSAGE_BYTES, drain on
            # SIGTERM); --server daphne serves with Daphne instead.
            python, "-m", "voiceplatform.serve", "--server", server,
            "--host", host, "--port", str(port),
        ],
        "worker": [
            python, "-m", "celery", "-A", "voiceplatform", "worker",
            "--loglevel", "INFO", "--concurrency", "2",
        ],
        "beat": [
            python, "-m", "celery", "-A", "voiceplatform", "beat",
            "--loglevel", "INFO", "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME,
        ],
    }  # fmt: skip


def _signal_group(process: subprocess.Popen, signal_number: int) -> None:
    try:
        os.killpg(process.pid, signal_number)
    except ProcessLookupError:
        pass


class Command(BaseCommand):
    help = "Run the web server, a Celery worker and Celery beat together (the embedded platform)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument(
            "--server",
            choices=("uvicorn", "daphne"),
            default="uvicorn",
            help="the web server (default uvicorn on uvloop, as in production)",
        )

    def handle(self, *args, host: str, port: int, server: str, **options):
        processes: dict[str, subprocess.Popen] = {}
        stopping = False

        def stop(*_args: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for name, command in platform_commands(host=host, port=port, server=server).items():
            processes[name] = subprocess.Popen(command, start_new_session=True)
        self.stdout.write(f"VoicePlatform is running on http://{host}:{port}/  (Ctrl-C stops it)")
        try:
            while not stopping:
                exited = [name for name, process in processes.items() if process.poll() is not None]
                if exited:
                    self.stderr.write(f"{', '.join(exited)} exited; stopping the platform.")
                    break
                time.sleep(0.3)
        finally:
            # The main process of each stops its own children (Celery's pool) gracefully.
            for process in processes.values():
                if process.poll() is None:
                    process.terminate()
            # The web server drains its sessions (VP_DRAIN_SECONDS): give it that long and more.
            deadline = time.monotonic() + settings.VP_DRAIN_SECONDS + 10
            for process in processes.values():
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal_group(process, signal.SIGKILL)
            self.stdout.write("VoicePlatform stopped.")
