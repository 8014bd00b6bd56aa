"""The console's live view of a session: transcript items as they are stored.

Authenticated by the console's session cookie (so the route sits behind Channels' auth
middleware and an Origin check against ALLOWED_HOSTS), resolved through the same membership
door as the console's pages: another tenant's session closes the socket like a missing one.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404

from agents import services
from agents.models import Session
from tenants.access import membership_get_for_user
from tenants.scoping import tenant_scope

CLOSE_NOT_FOUND = 4404


class SessionLiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        session_id = await database_sync_to_async(self._session_id)(
            kwargs["tenant_slug"], kwargs["session_id"]
        )
        if session_id is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = services.session_live_group(session_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    def _session_id(self, tenant_slug: str, session_id: str) -> int | None:
        try:
            membership = membership_get_for_user(user=self.scope["user"], tenant_slug=tenant_slug)
        except Http404:
            return None
        with tenant_scope(membership.tenant):
            session = Session.objects.filter(pk=int(session_id)).only("pk").first()
        return session.pk if session else None

    async def disconnect(self, code: int) -> None:
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def live_transcript(self, message: dict) -> None:
        await self.send_json({"type": "transcript", "item": message["item"]})

    async def live_ended(self, message: dict) -> None:
        await self.send_json({"type": "ended", "reason": message["reason"]})

    async def live_segment(self, message: dict) -> None:
        await self.send_json({"type": "segment", "reason": message["reason"]})
