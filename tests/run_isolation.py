"""One namespace per test run, so that two runs on one host never share state.

``REDIS_PREFIX`` goes in front of every Redis key the run writes: tests/conftest.py puts it in
this process's settings (channel layer, cache, Celery broker, as ``VP_REDIS_PREFIX`` would)
and in ``VP_REDIS_PREFIX`` for every server or Celery process a test starts. ``RUN_ID`` names
the run's PostgreSQL test database. The run's keys and database are deleted when it ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets

RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
REDIS_PREFIX = f"vptest:{RUN_ID}"
# The Redis the services tests use when the run itself is not on Redis (REDIS_URL unset).
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    return os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def apply(settings) -> None:
    """This run's prefix in the settings, as voiceplatform/settings.py derives them from
    ``VP_REDIS_PREFIX`` (they were read before any conftest; nothing has connected yet)."""
    os.environ["VP_REDIS_PREFIX"] = REDIS_PREFIX
    settings.REDIS_PREFIX = REDIS_PREFIX
    if settings.REDIS_URL:
        settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = f"{REDIS_PREFIX}:channels:"
        settings.CACHES["default"]["KEY_PREFIX"] = REDIS_PREFIX
        settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"] = f"{REDIS_PREFIX}:celery:"


def delete_keys() -> None:
    import redis

    for url in {redis_url(), DEFAULT_REDIS_URL}:
        with contextlib.suppress(redis.RedisError), redis.Redis.from_url(url) as client:
            keys = list(client.scan_iter(match=f"{REDIS_PREFIX}:*", count=1000))
            if keys:
                client.delete(*keys)


def drop_test_databases(settings) -> None:
    """Drop this run's PostgreSQL test database if Django's own teardown could not (a pooled
    connection still open): with a name per run, nothing else would ever drop it."""
    for database in settings.DATABASES.values():
        name = database.get("TEST", {}).get("NAME") or ""
        if not (database["ENGINE"].endswith("postgresql") and name.endswith(RUN_ID)):
            continue
        import psycopg

        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(
                dbname="postgres", host=database.get("HOST") or None,
                port=database.get("PORT") or None, user=database.get("USER") or None,
                password=database.get("PASSWORD") or None, autocommit=True,
            ) as connection,
        ):  # fmt: skip
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
