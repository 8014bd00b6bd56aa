"""The console's Content-Security-Policy, and a channel layer that carries no plaintext."""

from __future__ import annotations

import os
import re
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from agents.models import Agent, Session
from tenants.scoping import tenant_scope

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", re.I)


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        part.split()[0]: part.split()[1:] for part in (p.strip() for p in header.split(";")) if part
    }


@pytest.fixture
def console_pages(world):
    with tenant_scope(world.tenant_a):
        agent = Agent.objects.create(tenant=world.tenant_a, name="Shop", provider="local")
        live = Session.objects.create(
            tenant=world.tenant_a, agent=agent, channel="widget", model="m"
        )
    slug = world.tenant_a.slug
    return [
        reverse("tenant-dashboard", args=[slug]),
        reverse("credentials", args=[slug]),
        reverse("member-list", args=[slug]),
        reverse("session-detail", args=[slug, live.pk]),
        reverse("agent-try", args=[slug, agent.pk]),
    ]


def test_console_pages_allow_only_the_platforms_own_scripts(client: Client, world, console_pages):
    anonymous = Client()
    client.force_login(world.owner_a)
    for path in [*console_pages, reverse("login")]:
        response = (anonymous if path == reverse("login") else client).get(path)
        assert response.status_code == 200, path
        policy = directives(response)
        assert policy["script-src"] == ["'self'", "blob:"], path
        assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
        assert policy["connect-src"] == ["'self'"]
        # Nothing on the page needs an inline script (the policy would block it).
        assert not INLINE_SCRIPT.findall(response.content.decode()), path


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis (REDIS_URL)")
async def test_the_channel_layer_carries_no_plaintext(settings):
    import redis.asyncio as redis
    from channels.layers import get_channel_layer

    assert settings.CHANNEL_LAYERS["default"]["CONFIG"]["symmetric_encryption_keys"]
    layer = get_channel_layer()
    marker = f"transcript-{uuid.uuid4().hex}"
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "live.transcript", "text": marker})
    client = redis.from_url(settings.REDIS_URL)
    try:
        found = []
        async for key in client.scan_iter(match=f"{settings.REDIS_PREFIX}:channels:*"):
            if await client.type(key) == b"zset":
                found += await client.zrange(key, 0, -1)
        assert found, "the message is not in Redis"
        assert not any(marker.encode() in value for value in found)
        assert (await layer.receive(channel))["text"] == marker  # and it still arrives
    finally:
        await client.aclose()
        await layer.flush()
