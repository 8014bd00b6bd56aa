"""The realtime sockets: thin adapters that authenticate, then hand the socket to a bridge.

* ``/ws/widget/``: browsers. A single-use widget token (or an ephemeral key minted by a tenant
  backend) arrives as a WebSocket subprotocol, never in the URL; the Origin is checked again.
* ``/v1/realtime``: tenant backends, OpenAI-compatible (``Authorization: Bearer vp_live_…``).

Channels' ``AsyncConsumer.dispatch`` runs ``aclose_old_connections()`` (a thread hop) before
every message; at 50 audio frames a second that dominates the relay's CPU. These consumers
dispatch directly and do their database work in ``database_sync_to_async`` helpers, which
handle connection hygiene around each of those rare calls.

The control plane (an admin's "End session", quota cut-offs) reaches a session through the
channel layer, which is Redis in production. Nothing a session needs to start or to talk waits
on it: the session joins its control group in a background task that retries with a capped
backoff and re-joins every ``REREGISTER_S`` (cheap and idempotent), so the registration comes
back after a Redis outage or a restart that lost it; the control loop outlives layer errors.
On SIGTERM the process drains (``agents.drain``): see ``RealtimeConsumer.drain``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import parse_qs

from channels.consumer import AsyncConsumer, get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from agents import control_plane, drain, services
from agents.access import Access, AccessDenied, api_socket_access, widget_socket_access
from agents.compaction import Seed, seed_for_rotation
from agents.models import Session
from agents.realtime import frames
from agents.realtime.bridge import Continuation, RealtimeBridge
from agents.realtime.client_output import ClientOutput
from agents.realtime.policy import CHANNEL_API, CHANNEL_WIDGET
from agents.realtime.relay.closing import ending
from agents.realtime.relay.contracts import CallControl
from agents.realtime.tools import WebhookExecutor
from agents.recording import DatabaseRecorder
from agents.recordings import capture_for
from agents.selectors import local_engine_fallback, policy_for_agent
from agents.upstream import provider_key_for_tenant, upstream_connector
from billing.spend import spend_guard_for
from tenants.metrics import ADMISSIONS_REFUSED, DROPPED_FRAMES, LIVE_SESSIONS

logger = logging.getLogger(__name__)

# A session waits this long at most for its first join before it opens the upstream: with Redis
# up the join takes a millisecond and the session is reachable from its first event; with Redis
# down (refused at once) or unreachable (the connect timeout), the session goes on without it.
FIRST_JOIN_WAIT_S = 0.25


class RealtimeConsumer(AsyncConsumer):
    channel = ""

    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def __call__(self, scope, receive, send) -> None:
        """Read the socket in a plain loop; channel-layer control messages in their own task.

        Channels' ``await_many_dispatch`` waits on both sources with a new task per message;
        for 50 audio frames a second that is a measurable share of the relay's CPU, and the
        channel layer only ever carries the rare ``session.end_requested``.
        """
        self.scope = scope
        self.base_send = send
        self.bridge: RealtimeBridge | None = None
        self.output: ClientOutput | None = None
        self.recorder: DatabaseRecorder | None = None
        self.session_id: int | None = None
        self._ended = False
        self._bridge_ready = asyncio.Event()  # set once the bridge started (or never will)
        self._membership: control_plane.Membership | None = None  # in the session's group
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        control = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()  # no I/O: a name
            control = asyncio.create_task(self._control_loop(), name="realtime-control")
        # Subclasses that translate frames (the phone bridge) keep their own websocket_receive.
        direct = type(self).websocket_receive is RealtimeConsumer.websocket_receive
        try:
            while True:
                message = await receive()
                bridge = self.bridge
                if direct and bridge is not None and message["type"] == "websocket.receive":
                    # The audio path: straight to the bridge, no handler lookup per frame.
                    await bridge.from_client(message.get("text"), message.get("bytes"))
                    continue
                await self.dispatch(message)
        except StopConsumer:
            pass
        finally:
            if control is not None:
                control.cancel()
            if self._membership is not None:
                self._membership.stop()
            # disconnect() is not guaranteed to run: make sure nothing is left open.
            await self._end("server_shutdown")

    async def _control_loop(self) -> None:
        """Control messages for this session, whatever the layer does (control_plane)."""
        while True:
            message = await control_plane.receive(
                self.channel_layer, self.channel_name, label="session", on_failure=self._rejoin
            )
            try:
                await self.dispatch(message)
            except Exception:
                logger.exception("control message %s failed", message.get("type"))

    def _rejoin(self) -> None:
        if self._membership is not None:
            self._membership.rejoin.set()

    # --- hooks for the two sockets ------------------------------------------------------------

    def authenticate(self) -> Access:
        raise NotImplementedError

    # --- websocket events ---------------------------------------------------------------------

    async def websocket_connect(self, message: dict) -> None:
        if drain.draining():
            await self._refuse_draining()
            return
        try:
            access = await database_sync_to_async(self.authenticate)()
            session = await self._admit(access)
        except AccessDenied as denied:
            self._log_refusal(denied)
            await self._refuse(denied, self._offered_subprotocol())
            return
        await self._accept(access.subprotocol)
        self.output.attach()
        self.session_id = session.pk
        await self._start_bridge(access, session)

    async def _start_bridge(self, access: Access, session: Session) -> None:
        drain.session_opened(self)  # from here on, a drain ends this session (phone calls too)
        try:
            await self._open_bridge(access, session)
        finally:
            self._bridge_ready.set()

    async def _open_bridge(self, access: Access, session: Session) -> None:
        api_key = await database_sync_to_async(provider_key_for_tenant)(tenant_id=access.tenant.pk)
        provider, connect = upstream_connector(
            agent=access.agent, api_key=api_key, safety_identifier=session.end_user_hash
        )
        if local_engine_fallback(agent=access.agent, api_key=api_key):
            # The console says so too (agent form, Try-it, the session's page).
            logger.warning(
                "session %s: agent %s is set to OpenAI but tenant %s has no key stored; "
                "it runs on the local engine",
                session.pk, access.agent.pk, access.tenant.pk,
            )  # fmt: skip
        # Off the event loop: it decrypts secrets and resolves MCP server names.
        policy = await database_sync_to_async(policy_for_agent)(
            agent=access.agent, channel=self.channel, variables=access.variables
        )
        signing = access.tenant.webhook_signing_secrets()  # two during a rotation's overlap
        guard = await database_sync_to_async(spend_guard_for)(
            tenant_id=access.tenant.pk,
            agent_id=access.agent.pk,
            model=access.agent.model,
            provider=access.agent.provider,
            widget_key_id=access.widget_key_id,
        )
        # A recorded session's audio goes to a writer thread (never waited for).
        capture = await database_sync_to_async(capture_for)(
            policy=policy, tenant_id=access.tenant.pk, session_id=session.pk
        )
        self.recorder = DatabaseRecorder(
            tenant_id=access.tenant.pk,
            session_id=session.pk,
            agent_id=access.agent.pk,
            widget_key_id=access.widget_key_id,
            provider=provider,
            data_policy=access.tenant.data_policy,
        )
        self.bridge = RealtimeBridge(
            policy=policy,
            client=self,
            connect_upstream=connect,
            on_drop=lambda reason: DROPPED_FRAMES.labels(reason=reason).inc(),
            recorder=self.recorder,
            capture=capture,
            max_duration_s=access.tenant.max_session_minutes * 60,
            max_frame_chars=settings.VP_WS_MAX_MESSAGE_BYTES,
            max_client_message_chars=settings.VP_WS_MAX_MESSAGE_BYTES,
            continuation=self._continuation(access, session),
            spend_guard=guard,
            tool_executor=WebhookExecutor(
                signing_secret=signing[0],
                extra_signing_secrets=signing[1:],
                session_id=session.pk,
                agent_id=access.agent.pk,
                allow_private_addresses=settings.VP_ALLOW_PRIVATE_WEBHOOKS,
                tenant_id=access.tenant.pk,
            ),
            call_control=await self._call_control(access),
        )
        self.recorder.set_audio_source(lambda: (self.bridge.audio_in_ms, self.bridge.audio_out_ms))
        self.recorder.set_first_audio_source(lambda: self.bridge.first_audio_ms)
        self.recorder.start()
        LIVE_SESSIONS.labels(channel=self.channel).inc()  # down again in _end
        if self.channel_layer is not None:
            # Never awaited beyond its first try: a session starts and talks with Redis down.
            self._membership = control_plane.Membership(
                self.channel_layer, services.session_group(session.pk), self.channel_name,
                label="session",
            )  # fmt: skip
            await self._membership.first_try(FIRST_JOIN_WAIT_S)
        if not await self.bridge.start():
            await self._end("upstream_error")
            return
        self._watch = asyncio.create_task(self._watch_bridge())

    async def _call_control(self, access: Access) -> CallControl | None:
        """What controls the call beyond this socket (a phone call's transfer); None here."""
        return None

    def _continuation(self, access: Access, session: Session) -> Continuation:
        async def seed() -> Seed:
            return await seed_for_rotation(
                session_id=session.pk,
                tenant_id=access.tenant.pk,
                wait_s=settings.VP_ROTATION_SUMMARY_WAIT_SECONDS,
            )

        return Continuation(
            seed=seed,
            rotate_after_s=settings.VP_SESSION_ROTATE_SECONDS,
            rotate_grace_s=settings.VP_SESSION_ROTATE_GRACE_SECONDS,
            token_threshold=settings.VP_COMPACTION_TOKEN_THRESHOLD,
            reconnect_attempts=settings.VP_RECONNECT_ATTEMPTS,
            backoff_s=settings.VP_RECONNECT_BACKOFF_SECONDS,
            rate_limited_backoff_s=settings.VP_RECONNECT_RATE_LIMIT_BACKOFF_SECONDS,
        )

    async def _watch_bridge(self) -> None:
        await self.bridge.wait_closed()
        await self._end(self.bridge.end_reason or "upstream_closed")

    async def websocket_receive(self, message: dict) -> None:
        if self.bridge is not None:
            await self.bridge.from_client(message.get("text"), message.get("bytes"))

    async def websocket_disconnect(self, message: dict) -> None:
        await self._end(Session.EndReason.CLIENT_CLOSED)
        raise StopConsumer()

    async def drain(self, deadline: float) -> None:
        """The process is draining (SIGTERM): end this session with ``server_restarting``.

        An answer in flight is let finish first, so that the user hears it and its
        ``response.done`` is billed; an idle session ends at once; at ``deadline`` (loop
        time) it ends whatever it is doing. Returns once the usage and the end are recorded.
        """
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._bridge_ready.wait()
                while self.bridge is not None and self.bridge.response_active and not self._ended:
                    await asyncio.sleep(0.05)
        if loop.time() >= deadline and self.bridge is not None and self.bridge.response_active:
            logger.warning("session %s: drain deadline, an answer is cut off", self.session_id)
        await self._end(drain.DRAIN_CODE)

    async def session_end_requested(self, message: dict) -> None:
        """Cross-process control: an admin (or a quota) ends this session."""
        if self.bridge is not None:
            await self.bridge.end("session_ended", message.get("message") or "")

    # --- the ClientSink the bridge writes to ---------------------------------------------------

    async def send_text(self, text: str) -> None:
        if self.output is not None:
            await self.output.send_text(text)
        else:
            await self.base_send({"type": "websocket.send", "text": text})

    async def close(self, code: int, reason: str) -> None:
        if self.output is not None:
            await self.output.close(code, reason)
        else:
            await self.send({"type": "websocket.close", "code": code, "reason": reason[:120]})

    async def _accept(self, subprotocol: str | None) -> None:
        await self.send({"type": "websocket.accept", "subprotocol": subprotocol})
        self.output = ClientOutput(
            self.base_send,
            budget_bytes=settings.VP_WS_SEND_BUFFER_BYTES,
            stall_s=settings.VP_WS_SEND_STALL_SECONDS,
            on_slow_reader=self._on_slow_reader,
        )
        if type(self).send_text is RealtimeConsumer.send_text:
            self.send_text = self.output.send_text  # the bridge's sink, one call less per frame

    def _on_slow_reader(self) -> None:
        if self.bridge is not None:
            asyncio.get_running_loop().create_task(self.bridge.end("slow_reader"))

    # --- helpers -------------------------------------------------------------------------------

    async def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        if self.bridge is not None:
            LIVE_SESSIONS.labels(channel=self.channel).dec()
        try:
            await self._finish(reason)
        finally:
            drain.session_closed(self)

    async def _finish(self, reason: str) -> None:
        if self.output is not None:
            self.output.detach()
        if self._membership is not None:
            self._membership.stop()
        if self.bridge is not None:
            if reason == Session.EndReason.CLIENT_CLOSED:
                await self.bridge.close(reason)
            else:
                await self.bridge.end(reason)
            reason = self.bridge.end_reason or reason
        elif reason == drain.DRAIN_CODE and self.output is not None:
            await self._tell_draining()
        if self.recorder is not None:
            try:
                await self.recorder.close(reason=reason)
            except Exception:
                logger.exception("could not record the end of session %s", self.session_id)
        if self._membership is not None:
            await self._membership.leave()

    def _offered_subprotocol(self) -> str | None:
        offered = self.scope.get("subprotocols") or []
        return "realtime" if "realtime" in offered else None

    async def _refuse_draining(self) -> None:
        """A new socket while the process drains: refused with the code clients reconnect on
        (the load balancer, told by the failing readiness check, sends the retry elsewhere)."""
        self._ended = True
        ADMISSIONS_REFUSED.labels(code=drain.DRAIN_CODE).inc()
        await self._accept(self._offered_subprotocol())
        await self._tell_draining()

    async def _tell_draining(self) -> None:
        row = ending(drain.DRAIN_CODE)
        with contextlib.suppress(Exception):
            error = frames.error_event(row.code, row.message, error_type=row.error_type)
            await self.send_text(frames.dumps(error))
            await self.close(row.close_code, row.code)

    async def _admit(self, access: Access) -> Session:
        """Admit and record the new session (atomic admission), or raise ``AccessDenied``."""
        # The console's Try-it speaks the widget's protocol but is recorded (and admitted,
        # capped and billed) as its own channel, never as widget usage.
        channel = Session.Channel.CONSOLE if access.console else self.channel
        return await database_sync_to_async(services.session_start)(
            tenant=access.tenant, agent=access.agent, channel=channel,
            end_user=access.end_user, widget_key_id=access.widget_key_id,
            api_key_id=access.api_key_id,
        )  # fmt: skip

    def _log_refusal(self, denied: AccessDenied) -> None:
        logger.info(
            "%s socket refused: %s (tenant %s, client %s)", self.channel, denied.code,
            denied.tenant_id if denied.tenant_id is not None else "unknown", self.client_ip(),
        )  # fmt: skip

    async def _refuse(self, denied: AccessDenied, subprotocol: str | None) -> None:
        """Accept only to say why, then close with a code (4401, 4403, 4404, 4429…)."""
        self._ended = True
        await self._accept(subprotocol)
        await self.send_text(frames.dumps(frames.error_event(denied.code, denied.message)))
        await self.close(denied.close_code, denied.code)

    def header(self, name: bytes) -> str | None:
        for key, value in self.scope.get("headers") or []:
            if key == name:
                return value.decode("latin-1")
        return None

    def query(self) -> dict[str, str]:
        parsed = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        return {key: values[0] for key, values in parsed.items()}

    def client_ip(self) -> str:
        client = self.scope.get("client") or ("", 0)
        return str(client[0])


class WidgetConsumer(RealtimeConsumer):
    channel = CHANNEL_WIDGET

    def authenticate(self) -> Access:
        return widget_socket_access(
            offered=self.scope.get("subprotocols") or [],
            origin=self.header(b"origin"),
            client_ip=self.client_ip(),
        )


class ApiConsumer(RealtimeConsumer):
    channel = CHANNEL_API

    def authenticate(self) -> Access:
        return api_socket_access(
            authorization=self.header(b"authorization") or "",
            offered=self.scope.get("subprotocols") or [],
            beta=self.header(b"openai-beta") or "",
            query=self.query(),
            # /v1/realtime/translations is the translation endpoint, as OpenAI's.
            translations=self.scope.get("path", "").rstrip("/").endswith("/translations"),
        )
