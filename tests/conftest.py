"""Shared fixtures. The two-tenant world: owner and member of A, owner of B."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings

# A test marked serialized_rollback gets the database as migrations left it (the price book's
# seed). Content types and permissions are remade by post_migrate after every flush, so they
# are left out of the snapshot rather than restored twice.
settings.TEST_NON_SERIALIZED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]

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
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _unpaced_local_engine(settings):
    """The local engine answers as fast as it synthesizes in tests (real-time pacing is the
    deployment default); tests of barge-in turn pacing on where they need it."""
    settings.VP_LOCAL_ENGINE_REALTIME_PACING = False
