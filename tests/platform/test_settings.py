"""The settings module parses strictly and refuses insecure production values."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from voiceplatform.env import Env, parse_database_url
from voiceplatform.settings import INSECURE_SECRET_KEY, production_problems

ROOT = Path(__file__).resolve().parents[2]
GOOD_SECRET = "x7#Kq9!vLm2@Rt5$Wn8^Yp3&Zs6*Bd4(Fh1)Gj0_Cv" + "e" * 10
FERNET_KEY = "aGVsbG8taGVsbG8taGVsbG8taGVsbG8taGVsbG8tMTI="


def run_manage(environ, *args):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VP_", "DATABASE", "REDIS"))}
    clean.pop("DEBUG", None)
    clean.pop("SECRET_KEY", None)
    clean.pop("ALLOWED_HOSTS", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **environ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(tmp_path, **overrides):
    environ = {
        "VP_MODE": "production",
        "VP_DATA_DIR": str(tmp_path),
        "SECRET_KEY": GOOD_SECRET,
        "ALLOWED_HOSTS": "voice.example.com",
        "VP_CREDENTIAL_KEYS": FERNET_KEY,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
        "REDIS_URL": "redis://127.0.0.1:6379/15",
    }
    environ.update(overrides)
    return {key: value for key, value in environ.items() if value is not None}


def test_production_problems_name_each_insecure_value():
    problems = production_problems(
        secret_key=INSECURE_SECRET_KEY,
        debug=True,
        allowed_hosts=["*"],
        credential_keys_set=False,
        database_url_set=False,
        redis_url_set=False,
    )
    assert problems == [
        "SECRET_KEY must be set to a random value of at least 50 characters",
        "DEBUG must be off",
        "ALLOWED_HOSTS must not contain '*'",
        "VP_CREDENTIAL_KEYS must be set (python manage.py generate_credential_key)",
        "DATABASE_URL must point at PostgreSQL",
        "REDIS_URL must point at Redis",
    ]
    assert (
        production_problems(
            secret_key=GOOD_SECRET,
            debug=False,
            allowed_hosts=["voice.example.com"],
            credential_keys_set=True,
            database_url_set=True,
            redis_url_set=True,
        )
        == []
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY must be set"),
        ({"DEBUG": "true"}, "DEBUG must be off"),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must not contain '*'"),
        ({"VP_CREDENTIAL_KEYS": None}, "VP_CREDENTIAL_KEYS must be set"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
    ],
)
def test_production_refuses_to_start_with_insecure_values(tmp_path, overrides, message):
    result = run_manage(production_env(tmp_path, **overrides), "check")
    assert result.returncode != 0
    assert message in result.stderr


def test_check_deploy_passes_in_a_secure_production_configuration(tmp_path):
    result = run_manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_embedded_default_needs_no_variable(tmp_path):
    result = run_manage({"VP_DATA_DIR": str(tmp_path)}, "check")
    assert result.returncode == 0, result.stderr


def test_env_helpers_fail_loudly():
    env = Env({"N": "12x", "B": "perhaps", "L": "a,,b", "C": "blue", "OK": "7"})
    with pytest.raises(ImproperlyConfigured, match="not an integer"):
        env.int("N", 1)
    with pytest.raises(ImproperlyConfigured, match="not a boolean"):
        env.bool("B", False)
    with pytest.raises(ImproperlyConfigured, match="empty item"):
        env.list("L", [])
    with pytest.raises(ImproperlyConfigured, match="must be one of"):
        env.choice("C", "red", ("red", "green"))
    with pytest.raises(ImproperlyConfigured, match="at least 10"):
        env.int("OK", 1, minimum=10)
    assert env.int("OK", 1) == 7
    assert env.int("MISSING", 3) == 3


def test_database_url_parsing():
    url = parse_database_url("postgres://vp:p%40ss@db.internal:6432/voice?sslmode=require")
    assert (url.name, url.user, url.password, url.host, url.port) == (
        "voice", "vp", "p@ss", "db.internal", "6432",
    )  # fmt: skip
    assert url.options == {"sslmode": "require"}
    with pytest.raises(ImproperlyConfigured, match="not supported"):
        parse_database_url("mysql://x@y/z")
    with pytest.raises(ImproperlyConfigured, match="no database name"):
        parse_database_url("postgres://x@y/")


def settings_values(environ, *names) -> list:
    code = (
        "import json; from django.conf import settings; print(json.dumps(["
        + ", ".join(f"settings.{name}" for name in names)
        + "], default=str))"
    )
    result = run_manage(environ, "shell", "-v0", "-c", code)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_generate_credential_key_runs_before_production_is_configured(tmp_path):
    # Nothing set but the mode: the command is how the operator gets the missing key.
    result = run_manage(
        {"VP_MODE": "production", "VP_DATA_DIR": str(tmp_path)}, "generate_credential_key"
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    Fernet(key.encode())  # a valid key
    # Any other command still refuses the same configuration.
    refused = run_manage({"VP_MODE": "production", "VP_DATA_DIR": str(tmp_path)}, "check")
    assert refused.returncode != 0
    assert "VP_CREDENTIAL_KEYS must be set" in refused.stderr


def test_plain_http_is_possible_where_the_operator_says_so(tmp_path):
    names = ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")
    assert settings_values(production_env(tmp_path), *names) == [True, True, True]
    plain = production_env(tmp_path, VP_SECURE_SSL_REDIRECT="false", VP_SECURE_COOKIES="false")
    assert settings_values(plain, *names) == [False, False, False]
    # The embedded default serves http on localhost.
    assert settings_values({"VP_DATA_DIR": str(tmp_path)}, *names[1:]) == [False, False]


def test_production_static_files_get_hashed_names(tmp_path):
    environ = production_env(tmp_path)
    result = run_manage(environ, "collectstatic", "--noinput", "-v0")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "static" / "staticfiles.json").read_text())
    hashed = manifest["paths"]["console/console.css"]
    assert hashed != "console/console.css"
    assert (tmp_path / "static" / hashed).exists()
    assert (tmp_path / "static" / "console" / "console.css").exists()  # the stable name too
    code = "from django.templatetags.static import static; print(static('console/console.css'))"
    linked = run_manage(environ, "shell", "-v0", "-c", code)
    assert linked.stdout.strip() == f"/static/{hashed}", linked.stderr


def test_celery_visibility_timeout_is_configurable_and_outlasts_the_task_limit(tmp_path):
    environ = production_env(tmp_path, VP_CELERY_VISIBILITY_TIMEOUT="1200")
    assert settings_values(environ, "CELERY_BROKER_TRANSPORT_OPTIONS") == [
        {"visibility_timeout": 1200, "unacked_restore_throttle": 1}
    ]
    assert settings_values(production_env(tmp_path), "CELERY_VISIBILITY_TIMEOUT") == [900]
    settings_task = ("CELERY_TASK_ACKS_LATE", "CELERY_TASK_REJECT_ON_WORKER_LOST")
    assert settings_values(production_env(tmp_path), *settings_task) == [True, True]
    result = run_manage(production_env(tmp_path, VP_CELERY_VISIBILITY_TIMEOUT="200"), "check")
    assert result.returncode != 0
    assert "VP_CELERY_VISIBILITY_TIMEOUT (200) must exceed VP_CELERY_TASK_TIME_LIMIT (300)" in (
        result.stderr
    )


def test_every_setting_of_ours_is_listed_in_env_example():
    """The operator's list of settings is complete: each VP_ variable the settings read."""
    import re

    root = Path(__file__).resolve().parents[2]
    read = set(
        re.findall(
            r'env\.\w+\(\s*"(VP_[A-Z0-9_]+)"', (root / "voiceplatform/settings.py").read_text()
        )
    )
    listed = set(re.findall(r"^(VP_[A-Z0-9_]+)=", (root / ".env.example").read_text(), re.M))
    assert read - listed == set()


RECORDING_STORAGE = (
    "import json; from agents.recordings import recording_storage; s = recording_storage(); "
    "print(json.dumps([type(s).__name__, getattr(s, 'location', ''), "
    "getattr(s, 'bucket_name', None), getattr(s, 'endpoint_url', None)]))"
)


def test_recordings_go_to_the_data_dir_or_an_s3_compatible_bucket(tmp_path):
    result = run_manage({"VP_DATA_DIR": str(tmp_path)}, "shell", "-v0", "-c", RECORDING_STORAGE)
    assert result.returncode == 0, result.stderr
    kind, location, _, _ = json.loads(result.stdout.strip().splitlines()[-1])
    assert (kind, location) == ("FileSystemStorage", str(tmp_path / "recordings"))
    environ = {
        "VP_DATA_DIR": str(tmp_path),
        "VP_RECORDINGS_S3_BUCKET": "vp-recordings",
        "VP_RECORDINGS_S3_ENDPOINT_URL": "https://minio.internal:9000",
        "VP_RECORDINGS_S3_ACCESS_KEY_ID": "key",
        "VP_RECORDINGS_S3_SECRET_ACCESS_KEY": "secret",
    }
    result = run_manage(environ, "shell", "-v0", "-c", RECORDING_STORAGE)
    assert result.returncode == 0, result.stderr
    kind, location, bucket, endpoint = json.loads(result.stdout.strip().splitlines()[-1])
    assert (kind, location, bucket, endpoint) == (
        "S3Storage", "recordings", "vp-recordings", "https://minio.internal:9000",
    )  # fmt: skip
