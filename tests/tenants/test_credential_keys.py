"""A garbage VP_CREDENTIAL_KEYS stops the process at start-up with a message that says why."""

import os
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet

from tests.servers import ROOT

CHECK = "import django; django.setup(); print('started')"


def start(keys: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VP_")}
    environ.update(DJANGO_SETTINGS_MODULE="voiceplatform.settings", VP_CREDENTIAL_KEYS=keys)
    return subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, env=environ, capture_output=True, text=True
    )


@pytest.mark.parametrize("keys", ["garbage", "a,b", "!!!!", "{good},not-a-key"])
def test_a_value_that_is_not_a_fernet_key_is_refused_at_start_up(keys):
    result = start(keys.format(good=Fernet.generate_key().decode()))
    assert result.returncode != 0
    assert "of VP_CREDENTIAL_KEYS is not a Fernet key" in result.stderr
    assert "started" not in result.stdout


def test_real_keys_start():
    keys = ",".join(Fernet.generate_key().decode() for _ in range(2))
    result = start(keys)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "started"
