"""Which realtime engine a session talks to, and how to connect to it.

OpenAI with the tenant's own key (decrypted here, at connect, and nowhere else), else the
platform's key; with neither, or for agents configured so, the bundled local engine.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

import websockets
from django.conf import settings
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State

from agents import catalogue
from agents.models import Agent
from agents.realtime.bridge import Upstream
from agents.realtime.engine import connect_local
from tenants import crypto
from tenants.metrics import UPSTREAM_CONNECT_FAILURES, UPSTREAM_CONNECT_SECONDS
from tenants.models import ProviderCredential
from tenants.scoping import tenant_scope

# OpenAI sends events over 3 MB (conversation items with audio): keep well above that.
UPSTREAM_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


def provider_key_for_tenant(*, tenant_id: int) -> str:
    """The tenant's decrypted OpenAI key, else the platform's, else "" (local engine)."""
    with tenant_scope(tenant_id):
        credential = ProviderCredential.objects.filter(provider="openai").first()
    if credential is not None:
        return crypto.decrypt(credential.encrypted_secret)
    return settings.OPENAI_API_KEY


def upstream_provider(*, agent: Agent, api_key: str) -> str:
    if agent.provider == catalogue.PROVIDER_LOCAL or not api_key:
        return catalogue.PROVIDER_LOCAL
    return catalogue.PROVIDER_OPENAI


def openai_url(*, model: str, intent: str = "") -> str:
    """Realtime and transcription sessions share an endpoint; translation has its own."""
    if intent == "translation":
        return f"{settings.VP_OPENAI_REALTIME_URL}/translations?{urlencode({'model': model})}"
    query = {"intent": "transcription"} if intent == "transcription" else {"model": model}
    return f"{settings.VP_OPENAI_REALTIME_URL}?{urlencode(query)}"


def upstream_connector(
    *, agent: Agent, api_key: str, safety_identifier: str
) -> tuple[str, Callable[[], Awaitable[Upstream]]]:
    """(provider, coroutine factory opening a new upstream connection)."""
    provider = upstream_provider(agent=agent, api_key=api_key)
    intent = {catalogue.TRANSCRIPTION: "transcription", catalogue.TRANSLATION: "translation"}.get(
        agent.kind, ""
    )
    model = agent.model

    if provider == catalogue.PROVIDER_LOCAL:

        async def connect() -> Upstream:
            return await connect_local(
                model,
                max_session_seconds=settings.VP_LOCAL_ENGINE_MAX_SESSION_SECONDS,
                intent=intent or None,
                realtime_pacing=settings.VP_LOCAL_ENGINE_REALTIME_PACING,
            )

        return provider, _measured(connect)

    headers = {"Authorization": f"Bearer {api_key}", "OpenAI-Safety-Identifier": safety_identifier}
    url = openai_url(model=model, intent=intent)

    async def connect_openai() -> Upstream:
        return await websockets.connect(
            url,
            additional_headers=headers,
            max_size=UPSTREAM_MAX_MESSAGE_BYTES,
            open_timeout=settings.VP_UPSTREAM_CONNECT_TIMEOUT,
            ping_interval=20,
            ping_timeout=20,
            # Closing tells the provider at once; waiting long for its answer would only delay
            # the client's close (an upstream mid-stream answers late).
            close_timeout=1,
            compression=None,
            create_connection=RelayClientConnection,
        )

    return provider, _measured(connect_openai)


class RelayClientConnection(ClientConnection):
    """websockets' client connection with a short path for the relay's frames.

    ``send`` of a text message enters an async context manager (``send_context``) that checks
    the state, writes and awaits a drain: about 5 µs a frame of the relay's CPU (issue 17's
    profile). While the connection is open, no fragmented send is in progress and the
    transport is not pausing writes, that comes down to writing the frame; anything else (a
    paused transport, a closing connection, bytes, fragments) takes websockets' own path,
    which waits, drains or raises ``ConnectionClosed`` as it always does. A frame written on
    the short path may take the write buffer over its high-water mark: the next send waits.
    """

    async def send(self, message, text=None):  # type: ignore[override]
        if (
            type(message) is str
            and text is None
            and self.send_in_progress is None
            and not self.paused
            and self.protocol.state is State.OPEN
            and not self.transport.is_closing()
        ):
            self.protocol.send_text(message.encode())
            self.send_data()
            return
        await super().send(message, text=text)


def _measured(connect: Callable[[], Awaitable[Upstream]]) -> Callable[[], Awaitable[Upstream]]:
    """``connect``, timed into ``vp_upstream_connect_seconds`` and its failures counted by
    reason (``http_<status>``, ``timeout``, or the error's class)."""

    async def measured() -> Upstream:
        started = time.monotonic()
        try:
            upstream = await connect()
        except Exception as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            reason = (
                f"http_{status}"
                if status
                else "timeout"
                if isinstance(error, TimeoutError)
                else type(error).__name__
            )
            UPSTREAM_CONNECT_FAILURES.labels(reason=reason).inc()
            raise
        UPSTREAM_CONNECT_SECONDS.observe(time.monotonic() - started)
        return upstream

    return measured
