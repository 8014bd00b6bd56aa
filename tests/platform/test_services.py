"""The production backends: PostgreSQL through psycopg 3's pool and the Redis channel layer."""

import asyncio

import pytest
from channels_redis.core import RedisChannelLayer
from django.conf import settings
from django.db import connection

from tests.conftest import require_service
from tests.run_isolation import REDIS_PREFIX, RUN_ID, redis_url


@pytest.mark.services
def test_redis_channel_layer_round_trip():
    require_service("Redis", "127.0.0.1", 6379)

    async def round_trip():
        layer = RedisChannelLayer(hosts=[redis_url()], prefix=f"{REDIS_PREFIX}:test:")
        channel = await layer.new_channel()
        await layer.group_add("session-1", channel)
        await layer.group_send("session-1", {"type": "session.end", "reason": "admin"})
        message = await asyncio.wait_for(layer.receive(channel), timeout=5)
        await layer.flush()
        return message

    assert asyncio.run(round_trip()) == {"type": "session.end", "reason": "admin"}


@pytest.mark.django_db
def test_database_backend_matches_the_configuration():
    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        require_service("PostgreSQL", "127.0.0.1", 5432)
        assert connection.vendor == "postgresql"
        assert settings.DATABASES["default"]["CONN_MAX_AGE"] == 0
        assert "pool" in settings.DATABASES["default"]["OPTIONS"]
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            assert cursor.fetchone()[0]
            # This run's own test database, never the shared one (tests/conftest.py).
            cursor.execute("SELECT current_database()")
            assert cursor.fetchone()[0].endswith(RUN_ID)
    else:
        assert connection.vendor == "sqlite"
