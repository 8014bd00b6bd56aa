"""voiceplatform.serve's start-up: autobahn's debug-log helpers made plain (Daphne), and the
application imported with its start-up objects frozen out of the collector's full passes."""

from __future__ import annotations

import os
import subprocess
import sys

from autobahn.twisted import websocket as twisted_websocket
from autobahn.websocket import protocol

from voiceplatform import serve


def test_autobahn_formats_no_colours_for_debug_messages_it_never_logs(monkeypatch):
    for module in (protocol, twisted_websocket):
        # Restored after the test: the replacement is for a server process.
        monkeypatch.setattr(module, "hltype", module.hltype)
        monkeypatch.setattr(module, "hlval", module.hlval)
    assert "\x1b[" in twisted_websocket.hlval("peer")  # autobahn colours through click
    serve._plain_autobahn_log_arguments()
    for module in (protocol, twisted_websocket):
        assert module.hlval("tcp:127.0.0.1:5") == "tcp:127.0.0.1:5"
        assert module.hltype(serve.main) is serve.main


def test_the_application_is_imported_and_its_start_up_objects_frozen(tmp_path):
    probe = (
        "import gc, sys\n"
        "from voiceplatform import serve\n"
        "assert 'voiceplatform.asgi' not in sys.modules\n"
        "serve._load_application_frozen()\n"
        "assert 'voiceplatform.asgi' in sys.modules\n"
        "print(gc.get_freeze_count())\n"
    )
    env = {
        **os.environ,
        "VP_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "voiceplatform.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 100_000
