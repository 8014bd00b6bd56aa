"""The doors of the realtime sockets: who may open one, for which tenant and agent.

Every socket comes in through one of these, next to each other: ``widget_socket_access`` (a
single-use widget token, or a client secret, as a subprotocol), ``api_socket_access`` (a
platform API key or a client secret as the Bearer key), ``phone_stream_access`` (the stream
token a Twilio voice webhook minted). Each answers an ``Access`` or raises ``AccessDenied``
with a stable code and close code; "missing" and "not yours" are the same answer. The console's
door is ``tenants.console.tenant_view``; tasks enter through ``tenants.tasks.TenantTask``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from agents import journal
from agents.models import Agent, AgentVersion, Session, TokenVariables
from agents.realtime.variables import QUERY_PREFIX as VARIABLE_PREFIX
from billing.spend import spend_caps_exhausted
from tenants.metrics import ADMISSIONS_REFUSED
from tenants.models import ApiKey, ClientToken, Tenant
from tenants.origins import origin_is_allowed
from tenants.scoping import scopes_disabled, tenant_scope
from tenants.services import api_key_authenticate

WIDGET_TOKEN_PREFIX = "vp_wt_"
EPHEMERAL_PREFIX = "vp_ek_"
TOKEN_SUBPROTOCOL = "vp-token."
EPHEMERAL_SUBPROTOCOL = "openai-insecure-api-key."
# Tokens a Twilio voice webhook mints carry this end-user prefix (with the caller's hashed
# number): an ephemeral key minted for a browser or the console does not open a phone session.
PHONE_END_USER_PREFIX = "phone:"


@dataclass(frozen=True)
class Access:
    tenant: Tenant
    agent: Agent  # as the session runs it: ``agent_runtime``
    end_user: str
    subprotocol: str | None
    widget_key_id: int | None = None
    api_key_id: int | None = None  # the API key, or the one that minted the client secret
    console: bool = False  # the console's Try-it: the draft, on the console channel
    # Prompt variable values the session opens with (raw: the policy keeps the declared ones).
    variables: dict[str, str] = field(default_factory=dict)


class AccessDenied(Exception):
    """A refusal with a stable code, a message for the user and a WebSocket/HTTP status."""

    def __init__(self, code: str, message: str, *, status: int = 403, close_code: int = 4403):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.close_code = close_code
        self.tenant_id: int | None = None  # when known: refusals are logged with it


def not_found(what: str = "agent") -> AccessDenied:
    # "Missing" and "not yours" are the same answer.
    return AccessDenied(f"{what}_not_found", f"No such {what}.", status=404, close_code=4404)


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def agent_runtime(
    agent: Agent, *, version: AgentVersion | None = None, draft: bool = False
) -> Agent:
    """The agent as a session runs it: the draft (the row itself) for the console's Try-it,
    else the version a widget key, phone number or API call pins, else the live version. An
    agent never published (made without ``agent_create``) runs its row."""
    if draft:
        return agent
    chosen = version if version is not None else agent.live_version
    if chosen is None:
        return agent
    if chosen.agent_id != agent.pk:
        raise not_found("version")
    return agent.configured_as(chosen)


def version_get_for_agent(*, agent: Agent, number: object) -> AgentVersion | None:
    """The version an API call pins (``?version=N``): None when not given."""
    if number in (None, ""):
        return None
    try:
        wanted = int(number)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise AccessDenied(
            "invalid_version", "version must be a version number, e.g. 3", status=400,
            close_code=4400,
        ) from None  # fmt: skip
    with tenant_scope(agent.tenant_id):
        version = AgentVersion.objects.filter(agent=agent, number=wanted).first()
    if version is None:
        raise AccessDenied(
            "version_not_found", f"agent {agent.pk} has no version {wanted}", status=404,
            close_code=4404,
        )  # fmt: skip
    return version


def agent_get_for_tenant(*, tenant_id: int, agent_id: object) -> Agent:
    try:
        agent_pk = int(agent_id)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise not_found() from None
    with tenant_scope(tenant_id):
        agent = (
            Agent.objects.select_related("live_version")
            .filter(pk=agent_pk, status=Agent.Status.ACTIVE)
            .first()
        )
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
    agent = agent_get_for_tenant(tenant_id=api_key.tenant_id, agent_id=agent_id)
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


def session_stale_cutoff(now: datetime | None = None) -> datetime:
    """Sessions whose last heartbeat is older than this are gone (their process died): they no
    longer count against limits, and the sweep ends them at that heartbeat."""
    return (now or timezone.now()) - timedelta(seconds=settings.VP_SESSION_STALE_SECONDS)


def live_sessions_count(
    *, tenant_id: int, now: datetime | None = None, channel: str | None = None
) -> int:
    """The tenant's sessions that count against its concurrency limit: not ended, and alive
    (a heartbeat within ``VP_SESSION_STALE_SECONDS``); of one channel when given."""
    with tenant_scope(tenant_id):
        live = Session.objects.filter(
            ended_at__isnull=True, heartbeat_at__gte=session_stale_cutoff(now)
        )
        return (live if channel is None else live.filter(channel=channel)).count()


def _refused(denied: AccessDenied, tenant_id: int | None = None) -> AccessDenied:
    ADMISSIONS_REFUSED.labels(denied.code).inc()
    denied.tenant_id = tenant_id
    return denied


def admission_check(
    *,
    tenant: Tenant,
    agent: Agent | None = None,
    widget_key_id: int | None = None,
    channel: str | None = None,
) -> None:
    """Refuse a new session for a suspended tenant, over a spending cap, or at its concurrency
    limit (a check without a lock: token minting; ``session_start`` admits atomically)."""
    admission_check_standing(tenant=tenant, agent=agent, widget_key_id=widget_key_id)
    admission_check_capacity(tenant=tenant, channel=channel)


def admission_check_standing(
    *, tenant: Tenant, agent: Agent | None = None, widget_key_id: int | None = None
) -> None:
    """Everything but the concurrency limit: the tenant is active, and no cap the session would
    spend against is used up (the monthly budget; with the agent, its daily cap and the widget
    key's). Reads only: safe outside the admission lock."""
    if not journal.accepting():
        raise _refused(
            AccessDenied(
                "usage_journal_full",
                "The service cannot record usage right now; try again shortly.",
                status=503,
                close_code=4013,
            ),
            tenant.pk,
        )
    if not tenant.is_active:
        raise _refused(
            AccessDenied(
                "tenant_suspended", "This service is suspended.", status=403, close_code=4403
            ),
            tenant.pk,
        )
    exhausted = spend_caps_exhausted(
        tenant_id=tenant.pk,
        agent_id=agent.pk if agent is not None else None,
        widget_key_id=widget_key_id,
    )
    if "monthly budget" in exhausted:
        raise _refused(
            AccessDenied(
                "budget_exhausted",
                "The monthly budget is used up; new sessions are refused.",
                status=402,
                close_code=4402,
            ),
            tenant.pk,
        )
    if exhausted:
        raise _refused(
            AccessDenied(
                "budget_exhausted",
                f"Today's spending limit is reached ({', '.join(exhausted)}); new sessions are "
                "refused until tomorrow (UTC).",
                status=402,
                close_code=4402,
            ),
            tenant.pk,
        )


def admission_check_capacity(*, tenant: Tenant, channel: str | None = None) -> None:
    """Refuse at the tenant's concurrency limit, and a widget session at the widget's share of
    it. Atomic only inside ``session_start``'s transaction, which holds the tenant's row lock
    while it counts and creates."""
    if live_sessions_count(tenant_id=tenant.pk) >= tenant.max_concurrent_sessions:
        raise _refused(
            AccessDenied(
                "too_many_sessions",
                f"The limit of {tenant.max_concurrent_sessions} concurrent sessions is reached.",
                status=429,
                close_code=4429,
            ),
            tenant.pk,
        )
    if channel == Session.Channel.WIDGET and (
        live_sessions_count(tenant_id=tenant.pk, channel=channel) >= tenant.widget_session_limit
    ):
        raise _refused(
            AccessDenied(
                "too_many_widget_sessions",
                f"The widget's share of concurrent sessions ({tenant.widget_session_limit}) is "
                "in use; try again shortly.",
                status=429,
                close_code=4429,
            ),
            tenant.pk,
        )


def token_refused(code: str, message: str, tenant_id: int | None = None) -> AccessDenied:
    """A refused session token (4401). Each reason has its own code, so a page, a backend's
    logs and the platform's metrics can tell a replay from an expiry or a revocation:
    ``token_missing``, ``token_invalid`` (unknown, forged, or for another door),
    ``token_expired``, ``token_used`` (single use, already spent), ``token_revoked``."""
    return _refused(AccessDenied(code, message, close_code=4401), tenant_id)


def client_token_consume(*, raw: str, origin: str | None) -> ClientToken:
    """Spend a single-use token (widget: right origin too; console try-it; phone stream): once.
    A client secret a backend minted is valid until it expires, while its API key stands."""
    if not raw:
        raise token_refused("token_missing", "No session token was presented.")
    if not raw.startswith((WIDGET_TOKEN_PREFIX, EPHEMERAL_PREFIX)):
        raise token_refused("token_invalid", "Invalid session token.")
    now = timezone.now()
    with scopes_disabled():  # the token itself names its tenant
        token = (
            ClientToken.objects.select_related(
                "tenant", "agent__live_version", "agent_version", "api_key", "widget_key"
            )
            .filter(hashed_token=token_hash(raw))
            .first()
        )
        if token is None:
            raise token_refused("token_invalid", "Invalid session token.")
        if token.expires_at <= now:
            raise token_refused("token_expired", "This session token has expired.", token.tenant_id)
        if token.api_key is not None:  # a client secret a tenant backend minted
            if not token.api_key.is_active:
                raise token_refused(
                    "token_revoked", "The key that minted this secret was revoked.", token.tenant_id
                )
            # As OpenAI's client secrets: any number of sessions until it expires.
            ClientToken.objects.filter(pk=token.pk, used_at__isnull=True).update(used_at=now)
            return token
        if token.widget_key is not None and token.widget_key.revoked_at is not None:
            raise token_refused(
                "token_revoked", "The widget key of this token was revoked.", token.tenant_id
            )
        if token.kind == ClientToken.Kind.WIDGET and not origin_is_allowed(origin, [token.origin]):
            raise _refused(
                AccessDenied("origin_not_allowed", "Origin not allowed.", close_code=4403),
                token.tenant_id,
            )
        # Atomic single use: only one socket can flip used_at from empty.
        spent = ClientToken.objects.filter(pk=token.pk, used_at__isnull=True).update(used_at=now)
    if spent != 1:
        raise token_refused("token_used", "This session token was already used.", token.tenant_id)
    return token


def _chosen_subprotocol(offered: list[str]) -> str | None:
    return "realtime" if "realtime" in offered else None


def widget_socket_access(*, offered: list[str], origin: str | None, client_ip: str) -> Access:
    """``/ws/widget/``: a widget token (or a client secret) offered as a subprotocol."""
    raw = next(
        (
            protocol.split(".", 1)[1]
            for protocol in offered
            if protocol.startswith((TOKEN_SUBPROTOCOL, EPHEMERAL_SUBPROTOCOL))
        ),
        "",
    )
    token = client_token_consume(raw=raw, origin=origin)
    if token.end_user.startswith(PHONE_END_USER_PREFIX):  # minted for a phone call's stream
        raise token_refused("token_invalid", "Invalid session token.")
    console = token.kind == ClientToken.Kind.CONSOLE
    return Access(
        tenant=token.tenant,
        agent=agent_runtime(token.agent, version=token.agent_version, draft=console),
        end_user=token.end_user or f"ip:{client_ip}",
        subprotocol=_chosen_subprotocol(offered),
        widget_key_id=token.widget_key_id,
        api_key_id=token.api_key_id,
        console=console,
        variables=token_variables(token),
    )


def api_socket_access(
    *,
    authorization: str,
    offered: list[str],
    beta: str,
    query: dict[str, str],
    translations: bool,
) -> Access:
    """``/v1/realtime`` (and ``/translations``): a platform API key, or a client secret a
    backend minted, as the Bearer key (browsers: as a subprotocol)."""
    if "realtime=v1" in beta.replace(" ", ""):
        # As OpenAI since the GA protocol: the beta shape is refused, not half-served.
        raise AccessDenied(
            "beta_api_shape_disabled",
            "The Realtime API beta shape (OpenAI-Beta: realtime=v1) is no longer supported; "
            "remove the header and use the GA event names.",
            status=400,
            close_code=4400,
        )
    raw_key = _presented_key(authorization, offered)
    if raw_key.startswith(EPHEMERAL_PREFIX):
        # A client secret minted by POST /v1/realtime/client_secrets names its agent.
        token = client_token_consume(raw=raw_key, origin=None)
        if token.kind == ClientToken.Kind.CONSOLE or token.end_user.startswith(
            PHONE_END_USER_PREFIX
        ):  # the console's and the phone's tokens open their own doors only
            raise token_refused("token_invalid", "Invalid session token.", token.tenant_id)
        end_user = query.get("user") or f"client_secret:{token.pk}"
        agent = agent_runtime(token.agent, version=token.agent_version)
        variables = {**token_variables(token), **query_variables(query)}
        return Access(tenant=token.tenant, agent=agent, end_user=end_user,
                      api_key_id=token.api_key_id, variables=variables,
                      subprotocol=_chosen_subprotocol(offered))  # fmt: skip
    api_key = api_key_authenticate(raw_key) if raw_key else None
    if api_key is None:
        raise AccessDenied(
            "invalid_api_key", "Invalid or revoked API key.", status=401, close_code=4401
        )
    if not api_key.has_scope("realtime"):
        raise AccessDenied(
            "insufficient_scope", "This API key lacks the realtime scope.",
            status=403, close_code=4403,
        )  # fmt: skip
    agent = agent_get_for_api_key(
        api_key=api_key,
        agent_id=query.get("agent"),
        intent="translation" if translations else query.get("intent", ""),
    )
    pinned = version_get_for_agent(agent=agent, number=query.get("version"))
    agent = agent_runtime(agent, version=pinned)
    end_user = query.get("user") or f"api_key:{api_key.pk}"
    return Access(tenant=api_key.tenant, agent=agent, end_user=end_user, api_key_id=api_key.pk,
                  variables=query_variables(query),
                  subprotocol=_chosen_subprotocol(offered))  # fmt: skip


def token_variables(token: ClientToken) -> dict[str, str]:
    """The prompt variables stored with a token when it was minted (none: {})."""
    with tenant_scope(token.tenant_id):
        row = TokenVariables.objects.filter(token=token).first()
    return dict(row.values) if row is not None and isinstance(row.values, dict) else {}


def query_variables(query: dict[str, str]) -> dict[str, str]:
    """``?var_customer_name=Ada`` → {"customer_name": "Ada"} (an API socket's query)."""
    return {
        key[len(VARIABLE_PREFIX) :]: value
        for key, value in query.items()
        if key.startswith(VARIABLE_PREFIX)
    }


def _presented_key(authorization: str, offered: list[str]) -> str:
    """``Authorization: Bearer <key>``, or the subprotocol browsers use for client secrets."""
    scheme, _, raw_key = authorization.partition(" ")
    if scheme.lower() == "bearer" and raw_key.strip():
        return raw_key.strip()
    for protocol in offered:
        if protocol.startswith(EPHEMERAL_SUBPROTOCOL):
            return protocol[len(EPHEMERAL_SUBPROTOCOL) :]
    return ""


def phone_stream_access(*, raw_token: str) -> Access:
    """``/twilio/stream/``: the single-use stream token the voice webhook put in the TwiML."""
    token = client_token_consume(raw=raw_token, origin=None)
    if not token.end_user.startswith(PHONE_END_USER_PREFIX):
        raise token_refused("token_invalid", "Invalid session token.")
    agent = agent_runtime(token.agent, version=token.agent_version)
    return Access(tenant=token.tenant, agent=agent, end_user=token.end_user,
                  subprotocol=None)  # fmt: skip
