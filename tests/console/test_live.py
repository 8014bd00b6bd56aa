"""The console's live session socket: membership door, cross-tenant refusal, live items."""

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from agents.configuration import agent_create
from agents.models import Session
from agents.services import session_live_group
from tenants.scoping import tenant_scope
from voiceplatform.asgi import application


def make_session(tenant, owner):
    agent = agent_create(tenant=tenant, actor=owner, fields={"name": "A", "provider": "local"})
    with tenant_scope(tenant):
        return Session.objects.create(tenant=tenant, agent=agent, channel="api", model="m")


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def open_socket(user, tenant_slug, session_id, origin=b"http://localhost"):
    cookie = await database_sync_to_async(session_cookie)(user)
    communicator = WebsocketCommunicator(
        application,
        f"/ws/console/t/{tenant_slug}/sessions/{session_id}/",
        headers=[(b"cookie", cookie), (b"origin", origin)],
    )
    connected, code = await communicator.connect()
    return communicator, connected, code


@pytest.mark.django_db(transaction=True)
async def test_live_view_receives_transcript_items(world):
    session = await database_sync_to_async(make_session)(world.tenant_a, world.owner_a)
    communicator, connected, _ = await open_socket(world.member_a, "tenant-a", session.pk)
    assert connected
    item = {
        "item_id": "i1",
        "sequence": 0,
        "role": "user",
        "kind": "message",
        "text": "hi",
        "data": {},
    }
    await get_channel_layer().group_send(
        session_live_group(session.pk), {"type": "live.transcript", "item": item}
    )
    assert await communicator.receive_json_from(timeout=5) == {"type": "transcript", "item": item}
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_live_view_refuses_other_tenants_and_foreign_origins(world):
    session_b = await database_sync_to_async(make_session)(world.tenant_b, world.owner_b)
    for slug, session_id in [
        ("tenant-a", session_b.pk),
        ("tenant-b", session_b.pk),
        ("tenant-a", 999),
    ]:
        communicator, connected, code = await open_socket(world.owner_a, slug, session_id)
        assert (connected, code) == (False, 4404)
    communicator, connected, _ = await open_socket(
        world.owner_b, "tenant-b", session_b.pk, origin=b"https://evil.example"
    )
    assert not connected
