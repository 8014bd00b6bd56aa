"""Writes for realtime sessions: admission, client tokens, sessions, transcripts.

All of these run at connect time, on upstream control events or at session end, never per
audio frame. Async callers reach them through ``database_sync_to_async``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import (
    Agent,
    AgentVersion,
    PhoneNumber,
    Session,
    SessionSegment,
    TranscriptItem,
)
from billing.selectors import tenant_month_spend
from billing.tasks import enqueue_session_tally
from tenants import crypto
from tenants.audit import audit_record
from tenants.models import ApiKey, ClientToken, Tenant, WidgetKey
from tenants.origins import origin_is_allowed, origin_normalize
from tenants.scoping import scopes_disabled, tenant_scope

WIDGET_TOKEN_SECONDS = 60
EPHEMERAL_DEFAULT_SECONDS = 600
EPHEMERAL_MAX_SECONDS = 7200
# A session whose process has not written a heartbeat for this long is counted as gone.
SESSION_STALE_AFTER = timedelta(seconds=90)
WIDGET_TOKEN_PREFIX = "vp_wt_"
EPHEMERAL_PREFIX = "vp_ek_"


class AccessDenied(Exception):
    """A refusal with a stable code, a message for the user and a WebSocket/HTTP status."""

    def __init__(self, code: str, message: str, *, status: int = 403, close_code: int = 4403):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.close_code = close_code


def not_found(what: str = "agent") -> AccessDenied:
    # "Missing" and "not yours" are the same answer.
    return AccessDenied(f"{what}_not_found", f"No such {what}.", status=404, close_code=4404)


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def end_user_hash(*, tenant_id: int, end_user: str) -> str:
    """A stable, non-reversible id of an end user (sent upstream as the safety identifier)."""
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, f"{tenant_id}:{end_user}".encode(), hashlib.sha256).hexdigest()[:32]


def _agent_for_tenant(*, tenant_id: int, agent_id: object) -> Agent:
    try:
        agent_pk = int(agent_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise not_found() from None
    with tenant_scope(tenant_id):
        agent = Agent.objects.filter(pk=agent_pk, status=Agent.Status.ACTIVE).first()
    if agent is None:
        raise not_found()
    return agent


def agent_get_for_api_key(*, api_key: ApiKey, agent_id: object | None, intent: str = "") -> Agent:
    """The agent an API socket talks to: ``agent=<id>`` or the key's default agent."""
    if agent_id in (None, ""):
        if api_key.default_agent_id is None:
            raise AccessDenied(
                "agent_required",
                "pass ?agent=<id> or give the API key a default agent",
                status=400,
                close_code=4400,
            )
        agent_id = api_key.default_agent_id
    agent = _agent_for_tenant(tenant_id=api_key.tenant_id, agent_id=agent_id)
    wanted = intent if intent in ("transcription", "translation") else ""
    if wanted and agent.kind != wanted or not wanted and agent.kind == "translation":
        raise AccessDenied(
            "agent_kind_mismatch",
            f"agent {agent.pk} is a {agent.get_kind_display().lower()} agent: "
            + {"transcription": "use ?intent=transcription",
               "translation": "use /v1/realtime/translations"}.get(agent.kind, "use /v1/realtime"),
            status=400,
            close_code=4400,
        )  # fmt: skip
    return agent


def admission_check(*, tenant: Tenant) -> None:
    """Refuse a new session for a suspended tenant, at its concurrency limit or over budget."""
    if not tenant.is_active:
        raise AccessDenied(
            "tenant_suspended", "This service is suspended.", status=403, close_code=4403
        )
    cutoff = timezone.now() - SESSION_STALE_AFTER
    with tenant_scope(tenant):
        active = Session.objects.filter(ended_at__isnull=True, heartbeat_at__gte=cutoff).count()
    if active >= tenant.max_concurrent_sessions:
        raise AccessDenied(
            "too_many_sessions",
            f"The limit of {tenant.max_concurrent_sessions} concurrent sessions is reached.",
            status=429,
            close_code=4429,
        )
    if tenant.monthly_budget_usd is not None:
        if tenant_month_spend(tenant_id=tenant.pk) >= tenant.monthly_budget_usd:
            raise AccessDenied(
                "budget_exhausted",
                "The monthly budget is used up; new sessions are refused.",
                status=402,
                close_code=4402,
            )


@dataclass(frozen=True)
class MintedToken:
    value: str
    expires_at: object
    agent: Agent


def widget_token_mint(
    *, key: str, origin: str | None, agent_id: object | None = None, end_user: str = ""
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
    agent = _agent_for_tenant(tenant_id=widget_key.tenant_id, agent_id=agent_id)
    admission_check(tenant=widget_key.tenant)
    return _client_token_create(
        agent=agent,
        kind=ClientToken.Kind.WIDGET,
        seconds=WIDGET_TOKEN_SECONDS,
        widget_key=widget_key,
        origin=origin_normalize(origin or ""),
        end_user=end_user[:200],
    )


def _client_token_create(*, agent: Agent, kind: str, seconds: int, **fields: object) -> MintedToken:
    """Store a new single-use token (its hash only) and return it once."""
    prefix = WIDGET_TOKEN_PREFIX if kind == ClientToken.Kind.WIDGET else EPHEMERAL_PREFIX
    raw = prefix + secrets.token_urlsafe(24)
    expires_at = timezone.now() + timedelta(seconds=seconds)
    with tenant_scope(agent.tenant_id):
        ClientToken.objects.create(
            tenant_id=agent.tenant_id,
            kind=kind,
            hashed_token=_hash(raw),
            agent=agent,
            expires_at=expires_at,
            **fields,
        )
    return MintedToken(value=raw, expires_at=expires_at, agent=agent)


def ephemeral_key_mint(
    *, api_key: ApiKey, agent_id: object | None, seconds: int = EPHEMERAL_DEFAULT_SECONDS
) -> MintedToken:
    """A short-lived client secret a backend hands to a browser (usable until it expires)."""
    if not 10 <= seconds <= EPHEMERAL_MAX_SECONDS:
        raise AccessDenied(
            "invalid_expiry",
            f"expires_after.seconds must be between 10 and {EPHEMERAL_MAX_SECONDS}",
            status=400,
        )
    agent = agent_get_for_api_key(api_key=api_key, agent_id=agent_id)
    return _client_token_create(
        agent=agent, kind=ClientToken.Kind.EPHEMERAL, seconds=seconds, api_key=api_key
    )


CONSOLE_TOKEN_SECONDS = 60


def session_group(session_id: int) -> str:
    """The channel-layer group through which any process can end a session."""
    return f"vp-session-{session_id}"


def session_live_group(session_id: int) -> str:
    """The channel-layer group of console pages watching a session live."""
    return f"vp-session-live-{session_id}"


def console_token_mint(*, agent: Agent, end_user: str) -> MintedToken:
    """A single-use socket token for the console's try-it page (a logged-in member)."""
    admission_check(tenant=agent.tenant)
    return _client_token_create(
        agent=agent,
        kind=ClientToken.Kind.EPHEMERAL,
        seconds=CONSOLE_TOKEN_SECONDS,
        end_user=end_user[:200],
    )


def session_request_end(*, session: Session, actor: object | None) -> None:
    """Ask whichever process holds the session's socket to end it (through the channel layer).

    The end itself is recorded by that process; a session no process holds any more is ended
    by the abandoned-session sweep.
    """
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(
            session_group(session.pk), {"type": "session.end", "reason": "ended_by_admin"}
        )
    audit_record(
        tenant=session.tenant_id, actor=actor, action="session.end_requested", target=session
    )


def client_token_consume(*, raw: str, origin: str | None) -> ClientToken:
    """Spend a single-use token (widget: right origin too; console try-it; phone stream): once.
    A client secret a backend minted is valid until it expires, while its API key stands."""
    if not raw.startswith((WIDGET_TOKEN_PREFIX, EPHEMERAL_PREFIX)):
        raise AccessDenied("invalid_token", "Invalid session token.", close_code=4401)
    now = timezone.now()
    with scopes_disabled():  # the token itself names its tenant
        token = (
            ClientToken.objects.select_related("tenant", "agent", "api_key")
            .filter(hashed_token=_hash(raw))
            .first()
        )
        if token is None or token.expires_at <= now:
            raise AccessDenied(
                "invalid_token", "Invalid or expired session token.", close_code=4401
            )
        if token.api_key is not None:  # a client secret a tenant backend minted
            if not token.api_key.is_active:
                raise AccessDenied(
                    "invalid_token", "The key that minted this secret was revoked.",
                    close_code=4401,
                )  # fmt: skip
            # As OpenAI's client secrets: any number of sessions until it expires.
            ClientToken.objects.filter(pk=token.pk, used_at__isnull=True).update(used_at=now)
            return token
        if token.kind == ClientToken.Kind.WIDGET and not origin_is_allowed(origin, [token.origin]):
            raise AccessDenied("origin_not_allowed", "Origin not allowed.", close_code=4403)
        # Atomic single use: only one socket can flip used_at from empty.
        spent = ClientToken.objects.filter(pk=token.pk, used_at__isnull=True).update(used_at=now)
    if spent != 1:
        raise AccessDenied("invalid_token", "This session token was already used.", close_code=4401)
    return token


def session_start(*, tenant: Tenant, agent: Agent, channel: str, end_user: str) -> Session:
    admission_check(tenant=tenant)
    with tenant_scope(tenant):
        return Session.objects.create(
            tenant=tenant,
            agent=agent,
            agent_version_id=agent.live_version_id,
            channel=channel,
            model=agent.model,
            end_user_hash=end_user_hash(tenant_id=tenant.pk, end_user=end_user),
        )


def session_heartbeat(
    *, session_id: int, tenant_id: int, audio_in_ms: int, audio_out_ms: int
) -> None:
    with tenant_scope(tenant_id):
        Session.objects.filter(pk=session_id).update(
            heartbeat_at=timezone.now(), audio_in_ms=audio_in_ms, audio_out_ms=audio_out_ms
        )


def session_add_upstream(
    *,
    session_id: int,
    tenant_id: int,
    upstream_session_id: str,
    reason: str = "initial",
    seed_summary: str = "",
    gap_ms: int | None = None,
) -> None:
    """Record a new upstream segment of the session (idempotent on the upstream id)."""
    with tenant_scope(tenant_id), transaction.atomic():
        session = Session.objects.select_for_update().get(pk=session_id)
        if upstream_session_id in session.upstream_session_ids:
            return
        session.upstream_session_ids = [*session.upstream_session_ids, upstream_session_id]
        session.save(update_fields=["upstream_session_ids"])
        SessionSegment.objects.create(
            tenant_id=tenant_id,
            session=session,
            index=len(session.upstream_session_ids) - 1,
            upstream_session_id=upstream_session_id,
            reason=reason,
            seed_summary=seed_summary,
            gap_ms=gap_ms,
        )


def session_end(
    *, session_id: int, tenant_id: int, reason: str, audio_in_ms: int, audio_out_ms: int
) -> None:
    """Record the end once; a second call (e.g. from a sweep) keeps the first reason.

    The session's cost is tallied soon after (the billing sweep catches up if the broker is down).
    """
    with tenant_scope(tenant_id):
        updated = Session.objects.filter(pk=session_id, ended_at__isnull=True).update(
            ended_at=timezone.now(),
            end_reason=reason,
            audio_in_ms=audio_in_ms,
            audio_out_ms=audio_out_ms,
        )
    if updated:
        enqueue_session_tally(session_id)


def sessions_sweep_abandoned() -> int:
    """End sessions whose process died without recording their end (no recent heartbeat)."""
    cutoff = timezone.now() - SESSION_STALE_AFTER
    with scopes_disabled():
        return Session.objects.filter(ended_at__isnull=True, heartbeat_at__lt=cutoff).update(
            ended_at=timezone.now(), end_reason=Session.EndReason.ABANDONED
        )


def transcript_item_record(
    *,
    tenant_id: int,
    session_id: int,
    item_id: str,
    sequence: int,
    role: str,
    kind: str,
    text: str,
    data: dict,
) -> None:
    """Store a completed item; the same upstream item again updates it (no duplicates)."""
    with tenant_scope(tenant_id):
        try:
            with transaction.atomic():
                TranscriptItem.objects.update_or_create(
                    tenant_id=tenant_id,
                    session_id=session_id,
                    upstream_item_id=item_id,
                    defaults={
                        "sequence": sequence,
                        "role": role,
                        "kind": kind,
                        "text": text,
                        "data": data,
                    },
                )
        except IntegrityError:  # a concurrent writer stored it first
            pass


def _rotate_mcp_servers(servers: list) -> list:
    return [
        {**server, "authorization_encrypted": crypto.rotate(server["authorization_encrypted"])}
        if server.get("authorization_encrypted")
        else server
        for server in servers or []
    ]


def agent_secrets_rotate() -> int:
    """Re-encrypt the agents app's secrets under the first configured key; the row count.

    Twilio auth tokens, and MCP authorizations in agents and in their versions (rewriting only
    their ciphertext: a version's meaning does not change). Each row is rotated in its own
    transaction, so an interrupted run can simply be re-run.
    """
    count = 0
    with scopes_disabled():
        for number_id in PhoneNumber.objects.values_list("pk", flat=True):
            with transaction.atomic():
                number = PhoneNumber.objects.select_for_update().get(pk=number_id)
                number.twilio_auth_token_encrypted = crypto.rotate(
                    number.twilio_auth_token_encrypted
                )
                number.save(update_fields=["twilio_auth_token_encrypted"])
            count += 1
        for agent_id in Agent.objects.exclude(mcp_servers=[]).values_list("pk", flat=True):
            with transaction.atomic():
                agent = Agent.objects.select_for_update().get(pk=agent_id)
                Agent.objects.filter(pk=agent_id).update(
                    mcp_servers=_rotate_mcp_servers(agent.mcp_servers)
                )
            count += 1
        for version_id, config in AgentVersion.objects.values_list("pk", "config"):
            if any(
                server.get("authorization_encrypted") for server in config.get("mcp_servers") or []
            ):
                config = {**config, "mcp_servers": _rotate_mcp_servers(config["mcp_servers"])}
                AgentVersion.objects.filter(pk=version_id).update(config=config)
                count += 1
    return count
