"""The console's live view of a session: transcript items as they are stored.

Authenticated by the console's session cookie (so the route sits behind Channels' auth
middleware and an Origin check against ALLOWED_HOSTS), resolved through the same membership
door as the console's pages: another tenant's session closes the socket like a missing one.

The live view rides on the channel layer (Redis in production) and outlives it: the socket is
accepted whether or not the layer answers, the group is joined in the background (again and
again: a Redis restart forgets it), and a failing receive is retried instead of closing the
page's socket with 1011. The page reconnects, with a backoff, whenever the socket closes for
any other reason than "ended" or "not found".
"""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.utils import await_many_dispatch
from django.http import Http404

from agents import control_plane, services
from agents.consumers import FIRST_JOIN_WAIT_S
from agents.models import Session
from tenants.access import membership_get_for_user
from tenants.scoping import tenant_scope

logger = logging.getLogger(__name__)

CLOSE_NOT_FOUND = 4404


class SessionLiveConsumer(AsyncJsonWebsocketConsumer):
    async def __call__(self, scope, receive, send) -> None:
        """``AsyncConsumer.__call__`` with a channel receive that survives layer errors."""
        self.scope = scope
        self.base_send = send
        self._membership: control_plane.Membership | None = None
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()  # no I/O: a name
        try:
            await await_many_dispatch([receive, self._channel_receive], self.dispatch)
        except StopConsumer:
            pass
        finally:
            if self._membership is not None:
                self._membership.stop()

    async def _channel_receive(self) -> dict:
        return await control_plane.receive(
            self.channel_layer, self.channel_name, label="live view", on_failure=self._rejoin
        )

    def _rejoin(self) -> None:
        if self._membership is not None:
            self._membership.rejoin.set()

    async def connect(self) -> None:
        kwargs = self.scope["url_route"]["kwargs"]
        found = await database_sync_to_async(self._session)(
            kwargs["tenant_slug"], kwargs["session_id"]
        )
        if found is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        session_id, end_reason = found
        if end_reason is not None:
            # It ended while the page was away (a reconnect): say so, and the page stops.
            await self.accept()
            await self.send_json({"type": "ended", "reason": end_reason})
            return
        self._membership = control_plane.Membership(
            self.channel_layer, services.session_live_group(session_id), self.channel_name,
            label="live view",
        )  # fmt: skip
        # Joined before the page hears "open" when the layer answers; accepted all the same
        # when it does not (the join goes on in the background).
        await self._membership.first_try(FIRST_JOIN_WAIT_S * 4)
        await self.accept()

    def _session(self, tenant_slug: str, session_id: str) -> tuple[int, str | None] | None:
        """(id, end reason or None while live) of the member's session, None if not theirs."""
        try:
            membership = membership_get_for_user(user=self.scope["user"], tenant_slug=tenant_slug)
        except Http404:
            return None
        with tenant_scope(membership.tenant):
            session = (
                Session.objects.filter(pk=int(session_id))
                .only("pk", "ended_at", "end_reason")
                .first()
            )
        if session is None:
            return None
        return session.pk, (session.end_reason or "ended") if session.ended_at else None

    async def disconnect(self, code: int) -> None:
        if self._membership is not None:
            await self._membership.leave()

    async def live_transcript(self, message: dict) -> None:
        await self.send_json({"type": "transcript", "item": message["item"]})

    async def live_ended(self, message: dict) -> None:
        await self.send_json({"type": "ended", "reason": message["reason"]})

    async def live_segment(self, message: dict) -> None:
        await self.send_json({"type": "segment", "reason": message["reason"]})
