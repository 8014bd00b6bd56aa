"""Client tokens the realtime sockets accept: minted here, checked in ``agents.access``.

Widget tokens (60 s, single use, bound to the page's origin), client secrets a tenant backend
mints (``POST /v1/realtime/client_secrets``: valid until they expire), and the console's try-it
tokens (single use). Only a token's hash is stored; the value is returned once.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.utils import timezone

from agents.access import (
    EPHEMERAL_PREFIX,
    WIDGET_TOKEN_PREFIX,
    AccessDenied,
    admission_check,
    agent_get_for_api_key,
    agent_get_for_tenant,
    agent_runtime,
    not_found,
    token_hash,
    version_get_for_agent,
)
from agents.models import Agent, AgentVersion, TokenVariables
from agents.realtime.variables import variables_collect
from agents.selectors import agent_variable_defaults
from tenants.models import ApiKey, ClientToken, WidgetKey
from tenants.origins import origin_is_allowed, origin_normalize
from tenants.scoping import scopes_disabled, tenant_scope

WIDGET_TOKEN_SECONDS = 60
EPHEMERAL_DEFAULT_SECONDS = 600
EPHEMERAL_MAX_SECONDS = 7200
CONSOLE_TOKEN_SECONDS = 60


@dataclass(frozen=True)
class MintedToken:
    value: str
    expires_at: object
    agent: Agent  # as the session will run it (the pinned, live or draft configuration)


def widget_appearance(*, key: str, origin: str | None) -> dict:
    """The look of the widget a page embeds with ``key``: read when the widget mounts, before
    any token. Refused like a token (unknown or revoked key, a foreign origin): a page that may
    not talk to the agent learns nothing of its key's settings."""
    with scopes_disabled():  # the publishable key is what names the tenant
        widget_key = WidgetKey.objects.filter(key=key, revoked_at__isnull=True).first()
    if widget_key is None:
        raise AccessDenied("invalid_widget_key", "Unknown or revoked widget key.", status=403)
    if not origin_is_allowed(origin, widget_key.allowed_origins):
        raise AccessDenied(
            "origin_not_allowed", "This page's origin is not allowed for this widget key."
        )
    return widget_key.appearance()


def widget_token_mint(
    *,
    key: str,
    origin: str | None,
    agent_id: object | None = None,
    end_user: str = "",
    variables: dict | None = None,
) -> MintedToken:
    """A 60-second, single-use token for the widget socket, bound to the page's origin."""
    with scopes_disabled():  # the publishable key is what names the tenant
        widget_key = (
            WidgetKey.objects.select_related("tenant")
            .filter(key=key, revoked_at__isnull=True)
            .first()
        )
    if widget_key is None:
        raise AccessDenied("invalid_widget_key", "Unknown or revoked widget key.", status=403)
    if not origin_is_allowed(origin, widget_key.allowed_origins):
        raise AccessDenied(
            "origin_not_allowed", "This page's origin is not allowed for this widget key."
        )
    if widget_key.agent_id is not None:
        if agent_id not in (None, "", widget_key.agent_id, str(widget_key.agent_id)):
            raise not_found()
        agent_id = widget_key.agent_id
    if agent_id in (None, ""):
        raise AccessDenied("agent_required", "Name the agent to talk to.", status=400)
    agent = agent_get_for_tenant(tenant_id=widget_key.tenant_id, agent_id=agent_id)
    admission_check(
        tenant=widget_key.tenant, agent=agent, widget_key_id=widget_key.pk, channel="widget"
    )
    return _client_token_create(
        agent=agent,
        kind=ClientToken.Kind.WIDGET,
        seconds=WIDGET_TOKEN_SECONDS,
        version=widget_key.version,
        widget_key=widget_key,
        origin=origin_normalize(origin or ""),
        end_user=end_user[:200],
        variables=variables,
    )


def _client_token_create(
    *,
    agent: Agent,
    kind: str,
    seconds: int,
    version: AgentVersion | None = None,
    variables: dict | None = None,
    **fields: object,
) -> MintedToken:
    """Store a new single-use token (its hash only) and return it once. ``version`` pins a
    published version; a console token runs the draft; any other runs the live version. The
    prompt variable values it opens its session with are kept too (the names the agent that
    runs declares, cleaned)."""
    runtime = agent_runtime(agent, version=version, draft=kind == ClientToken.Kind.CONSOLE)
    values = variables_collect(variables, allowed=agent_variable_defaults(runtime))
    prefix = WIDGET_TOKEN_PREFIX if kind == ClientToken.Kind.WIDGET else EPHEMERAL_PREFIX
    raw = prefix + secrets.token_urlsafe(24)
    expires_at = timezone.now() + timedelta(seconds=seconds)
    with tenant_scope(agent.tenant_id):
        token = ClientToken.objects.create(
            tenant_id=agent.tenant_id,
            kind=kind,
            hashed_token=token_hash(raw),
            agent=agent,
            agent_version=version,
            expires_at=expires_at,
            **fields,
        )
        if values:
            TokenVariables.objects.create(tenant_id=agent.tenant_id, token=token, values=values)
    return MintedToken(value=raw, expires_at=expires_at, agent=runtime)


def ephemeral_key_mint(
    *,
    api_key: ApiKey,
    agent_id: object | None,
    seconds: int = EPHEMERAL_DEFAULT_SECONDS,
    version: object | None = None,
    variables: dict | None = None,
) -> MintedToken:
    """A short-lived client secret a backend hands to a browser (usable until it expires);
    ``version`` (a number) pins a published version of the agent, else the live one runs."""
    if not 10 <= seconds <= EPHEMERAL_MAX_SECONDS:
        raise AccessDenied(
            "invalid_expiry",
            f"expires_after.seconds must be between 10 and {EPHEMERAL_MAX_SECONDS}",
            status=400,
        )
    agent = agent_get_for_api_key(api_key=api_key, agent_id=agent_id)
    pinned = version_get_for_agent(agent=agent, number=version)
    return _client_token_create(
        agent=agent, kind=ClientToken.Kind.EPHEMERAL, seconds=seconds, api_key=api_key,
        version=pinned, variables=variables,
    )  # fmt: skip


def console_token_mint(
    *, agent: Agent, end_user: str, variables: dict | None = None
) -> MintedToken:
    """A single-use socket token for the console's Try-it page (a member who may configure):
    its session runs the agent's draft, on the console channel, with the prompt variable
    values typed there."""
    admission_check(tenant=agent.tenant, agent=agent)
    return _client_token_create(
        agent=agent,
        kind=ClientToken.Kind.CONSOLE,
        seconds=CONSOLE_TOKEN_SECONDS,
        end_user=end_user[:200],
        variables=variables,
    )


def phone_token_mint(
    *,
    agent: Agent,
    end_user: str,
    version: AgentVersion | None = None,
    variables: dict | None = None,
) -> MintedToken:
    """The single-use token of one phone call's media stream (the number's pinned version, or
    the live one), with the caller's prompt variable values."""
    admission_check(tenant=agent.tenant, agent=agent)
    return _client_token_create(
        agent=agent,
        kind=ClientToken.Kind.EPHEMERAL,
        seconds=CONSOLE_TOKEN_SECONDS,
        version=version,
        end_user=end_user[:200],
        variables=variables,
    )
