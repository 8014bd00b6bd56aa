"""``/twilio/stream/``: a phone call's Twilio Media Stream, relayed to the agent's realtime session.

Twilio opens the socket when the voice webhook's TwiML ``<Connect><Stream>`` runs, and speaks its
own JSON protocol: ``connected``, then ``start`` (stream and call ids, and the ``<Parameter>``
values of the TwiML, among them the single-use token the webhook minted), then ``media`` frames
of μ-law audio, ``mark`` echoes, ``dtmf`` and finally ``stop``. The session can only start with
``start``: the token in its parameters names the tenant, the agent and the (hashed) caller; the
URL carries nothing.

Everything else is the realtime path's: ``RealtimeConsumer`` records the session (channel
"phone"), transcripts and usage, and the bridge relays; ``TwilioCall`` translates both ways.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from agents.access import Access, AccessDenied, phone_stream_access, query_variables
from agents.consumers import RealtimeConsumer
from agents.models import Session
from agents.realtime import frames
from agents.realtime.policy import CHANNEL_PHONE
from agents.realtime.relay.contracts import CallControl
from agents.telephony import (
    NUMBER_PARAMETER,
    PHONE_AUDIO_FORMAT,
    StreamStart,
    TwilioCall,
    TwilioCallControl,
    media_append_event,
    stream_start_parse,
    twilio_event,
)
from agents.telephony_views import phone_number_auth_token

logger = logging.getLogger(__name__)

# Twilio sends ``start`` right after ``connected``: a socket that has not authenticated with it
# by then is not Twilio, and is closed rather than left to hold a connection open.
START_TIMEOUT_S = 5.0
CLOSE_START_TIMEOUT = 4401


class TwilioMediaConsumer(RealtimeConsumer):
    channel = CHANNEL_PHONE

    async def websocket_connect(self, message: dict) -> None:
        self.call = TwilioCall()
        self.stream_start: StreamStart | None = None
        await self._accept(None)  # through ClientOutput: closes keep their reason under Daphne
        self.output.attach()
        self._start_deadline = asyncio.get_running_loop().call_later(
            START_TIMEOUT_S, lambda: asyncio.ensure_future(self._start_timed_out())
        )

    async def _start_timed_out(self) -> None:
        if self.stream_start is None and not self._ended:
            logger.info("phone stream closed: no start within %.0f s", START_TIMEOUT_S)
            self._ended = True
            await self.close(CLOSE_START_TIMEOUT, "start_timeout")

    async def websocket_disconnect(self, message: dict) -> None:
        deadline = getattr(self, "_start_deadline", None)
        if deadline is not None:
            deadline.cancel()
        await super().websocket_disconnect(message)

    async def websocket_receive(self, message: dict) -> None:
        text = message.get("text")
        if not text:
            return
        event = twilio_event(text)
        if event == "media":  # the hot path: 50 a second, no JSON decode
            if self.bridge is not None:
                append = media_append_event(text)
                if append is not None:
                    await self.bridge.from_client(append)
            return
        if event is not None and event not in ("start", "mark", "stop"):
            return  # connected, dtmf: nothing to do
        decoded = frames.loads_object(text)
        if decoded is None:
            return
        event = decoded.get("event")
        if event == "mark":
            name = (decoded.get("mark") or {}).get("name")
            if isinstance(name, str):
                self.call.on_mark(name)
        elif event == "start":
            await self._on_start(decoded)
        elif event == "stop":
            await self._end(Session.EndReason.CLIENT_CLOSED)
            await self.close(1000, "call ended")
        elif event == "media" and self.bridge is not None:  # an unusual key order
            payload = (decoded.get("media") or {}).get("payload")
            if isinstance(payload, str) and payload:
                audio = {"type": "input_audio_buffer.append", "audio": payload}
                await self.bridge.from_client(frames.dumps(audio))

    async def _on_start(self, message: dict) -> None:
        start = stream_start_parse(message)
        if start is None or self.stream_start is not None or self._ended:
            return
        self.stream_start = start
        self._start_deadline.cancel()
        self.call.stream_sid = start.stream_sid
        try:
            access = await database_sync_to_async(self.authenticate)()
            session = await self._admit(access)
        except AccessDenied as denied:
            self._log_refusal(denied)
            self._ended = True
            await self.close(denied.close_code, denied.code)
            return
        self.session_id = session.pk
        logger.info("phone stream %s is session %s", start.stream_sid, session.pk)
        await self._start_bridge(access, session)

    def authenticate(self) -> Access:
        raw = self.stream_start.token if self.stream_start is not None else ""
        access = phone_stream_access(raw_token=raw)
        # The call's prompt variables: ``var_*`` stream parameters the voice webhook set.
        parameters = self.stream_start.parameters if self.stream_start is not None else {}
        return dataclasses.replace(access, variables=query_variables(parameters))

    async def _call_control(self, access: Access) -> CallControl | None:
        """Twilio's REST API for this call (transfer_call), with its number's auth token."""
        start = self.stream_start
        if start is None or not access.agent.transfer_call_enabled:
            return None
        auth_token = await database_sync_to_async(phone_number_auth_token)(
            tenant_id=access.tenant.pk, number=start.parameters.get(NUMBER_PARAMETER, "")
        )
        return TwilioCallControl(
            api_url=settings.VP_TWILIO_API_URL,
            account_sid=start.account_sid,
            call_sid=start.call_sid,
            auth_token=auth_token,
        )

    async def _start_bridge(self, access: Access, session: Session) -> None:
        """The realtime path's bridge, with μ-law both ways whatever the agent's formats.

        The base consumer builds the policy from the agent; an in-memory copy of the agent
        with the phone formats gives ``dataclasses.replace(policy, input_audio_format=…,
        output_audio_format=…)`` without duplicating the base's bridge construction (the copy
        is never saved).
        """
        agent = copy.copy(access.agent)
        agent.input_audio_format = PHONE_AUDIO_FORMAT
        agent.output_audio_format = PHONE_AUDIO_FORMAT
        await super()._start_bridge(dataclasses.replace(access, agent=agent), session)

    # --- the ClientSink the bridge writes to: Realtime server events become Twilio's -------

    async def send_text(self, text: str) -> None:
        bridge = self.bridge
        out = self.call.outbound(
            text, response_active=bridge is not None and bridge.response_active
        )
        for message in out.to_twilio:
            await self.send({"type": "websocket.send", "text": message})
        if bridge is not None:
            for event in out.to_upstream:
                await bridge.from_client(event)
