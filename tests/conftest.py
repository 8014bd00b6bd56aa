"""Shared fixtures. The two-tenant world: owner and member of A, owner of B."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings

from tests import run_isolation

# This run's own Redis key prefix (and PostgreSQL test database, below): tests/run_isolation.py.
run_isolation.apply(settings)


def pytest_report_header(config) -> str:
    return f"run id: {run_isolation.RUN_ID} (Redis keys {run_isolation.REDIS_PREFIX}:*)"


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown
def pytest_sessionfinish(session, exitstatus) -> None:
    run_isolation.delete_keys()
    run_isolation.drop_test_databases(settings)


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip outside CI when a service is absent; in CI its absence is a failure."""
    if service_reachable(host, port):
        return
    if IN_CI:
        pytest.fail(f"{name} at {host}:{port} is required in CI but not reachable")
    pytest.skip(f"{name} at {host}:{port} is not running")


@pytest.fixture(scope="session")
def django_db_modify_db_settings():
    """This run's own PostgreSQL test database (test_<name>_<run id>): two runs at once never
    create, flush or drop each other's. (SQLite's test database is in memory.)"""
    for database in settings.DATABASES.values():
        if database["ENGINE"].endswith("postgresql"):
            test = database.setdefault("TEST", {})
            name = test.get("NAME") or f"test_{database['NAME']}"
            test["NAME"] = f"{name}_{run_isolation.RUN_ID}"
    # A connection pool made before the test database exists (a test that reads
    # ``connection.pool`` makes one) stays on the database it was made for: Django's
    # create_test_db closes the connection, not the pool, so migrations and every test after
    # would run in the shared database itself. Closed here, the pool is made again for the
    # test database at its first use.
    from django.db import connections

    for alias in connections:
        connection = connections[alias]
        if connection.vendor == "postgresql":
            connection.close()
            connection.close_pool()


@pytest.fixture(autouse=True)
def _channel_layers_of_this_test():
    """Each test its own channel layer instances. Every async test runs in an event loop of its
    own, and a channel layer is made for one loop (as in a server process): channels-redis's
    receive lock and connections made in an earlier test's loop, shared with the next, left a
    cancelled receive waiting for ever when a test's loop closed (its teardown hung)."""
    from channels.layers import channel_layers

    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@dataclass
class World:
    tenant_a: Any
    tenant_b: Any
    owner_a: Any
    member_a: Any
    owner_b: Any
    password: str = "correct-horse-battery"


@pytest.fixture
def world(db) -> World:
    from tenants import services
    from tenants.models import Role

    password = "correct-horse-battery"
    owner_a = services.user_get_or_create(email="owner-a@example.com", password=password)
    member_a = services.user_get_or_create(email="member-a@example.com", password=password)
    owner_b = services.user_get_or_create(email="owner-b@example.com", password=password)
    tenant_a = services.tenant_create(slug="tenant-a", name="Tenant A", owner=owner_a)
    tenant_b = services.tenant_create(slug="tenant-b", name="Tenant B", owner=owner_b)
    services.membership_set(tenant=tenant_a, user=member_a, role=Role.VIEWER)
    return World(tenant_a, tenant_b, owner_a, member_a, owner_b, password)


@pytest.fixture(autouse=True)
def _rate_limits_out_of_the_way(settings):
    """Every test mints widget tokens and asks for password resets from 127.0.0.1: the limits
    are tested on their own (tests/agents/test_widget_abuse.py, test_login_security.py), not
    by accident across modules."""
    settings.VP_WIDGET_SESSION_RATE_PER_ADDRESS = "100000/m"
    settings.VP_WIDGET_SESSION_RATE_PER_KEY = "100000/m"
    settings.VP_PASSWORD_RESET_RATE = "100000/m"


@pytest.fixture(autouse=True)
def recordings_dir(settings, tmp_path):
    """Recordings a test makes go to its own directory (this one), never the checkout's data/."""
    settings.STORAGES = {
        **settings.STORAGES,
        "recordings": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "recordings")},
        },
    }
    return tmp_path / "recordings"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _unpaced_local_engine(settings):
    """The local engine answers as fast as it synthesizes in tests (real-time pacing is the
    deployment default); tests of barge-in turn pacing on where they need it."""
    settings.VP_LOCAL_ENGINE_REALTIME_PACING = False
