"""Abuse limits of POST /widget/session: per client address, per widget key, fail-open cache."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from agents.models import Agent
from tenants.scoping import tenant_scope
from tenants.services import widget_key_create

ORIGIN = "https://shop.example"


@pytest.fixture
def raw_key(world):
    cache.clear()  # the rate counters of other tests
    with tenant_scope(world.tenant_a):
        agent = Agent.objects.create(tenant=world.tenant_a, name="Shop", provider="local")
    key = widget_key_create(
        tenant=world.tenant_a, name="shop", allowed_origins=[ORIGIN], agent=agent
    )
    return key.key


def mint(raw_key: str, address: str):
    return Client(REMOTE_ADDR=address).post(
        "/widget/session", {"key": raw_key}, content_type="application/json",
        headers={"Origin": ORIGIN},
    )  # fmt: skip


def test_one_address_is_limited_and_told_when_to_come_back(raw_key, settings):
    settings.VP_WIDGET_SESSION_RATE_PER_ADDRESS = "3/m"
    answers = [mint(raw_key, "203.0.113.7") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [201, 201, 201, 429]
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["Access-Control-Allow-Origin"] == ORIGIN  # the page can show why
    assert mint(raw_key, "203.0.113.8").status_code == 201  # another address is not affected
    # An IPv6 /64 is one address: rotating within it does not help.
    assert [mint(raw_key, f"2001:db8::{n}").status_code for n in range(4)][-1] == 429


def test_one_widget_key_is_limited_across_addresses(raw_key, settings):
    settings.VP_WIDGET_SESSION_RATE_PER_KEY = "5/m"
    codes = [mint(raw_key, f"198.51.100.{n}").status_code for n in range(6)]
    assert codes == [201] * 5 + [429]
    refused = mint(raw_key, "198.51.100.99")  # a fresh address does not help either
    assert refused.status_code == 429 and "this key" in refused.json()["error"]["message"]


def test_limits_fail_open_when_the_cache_is_down(raw_key, settings):
    from tests.servers import free_port

    settings.VP_WIDGET_SESSION_RATE_PER_ADDRESS = "1/m"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        }
    }
    assert [mint(raw_key, "203.0.113.9").status_code for _ in range(3)] == [201] * 3
