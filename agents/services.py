"""Writes for realtime sessions: sessions, their segments and transcripts, and agent secrets.

All of these run at connect time, on upstream control events or at session end, never per
audio frame. Async callers reach them through ``database_sync_to_async``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from agents import signals
from agents.access import admission_check_capacity, admission_check_standing, session_stale_cutoff
from agents.models import (
    Agent,
    AgentVersion,
    PhoneNumber,
    Session,
    SessionSegment,
    TranscriptItem,
)
from billing.tasks import enqueue_session_tally
from tenants import crypto
from tenants.audit import audit_record
from tenants.metrics import CHANNEL_LAYER_ERRORS
from tenants.models import ApiKey, Tenant
from tenants.scoping import scopes_disabled, tenant_scope

logger = logging.getLogger(__name__)


class ControlPlaneUnavailable(Exception):
    """The channel layer (Redis) could not carry a request to a live session."""


def end_user_hash(*, tenant_id: int, end_user: str) -> str:
    """A stable, non-reversible id of an end user (sent upstream as the safety identifier)."""
    key = settings.SECRET_KEY.encode()
    return hmac.new(key, f"{tenant_id}:{end_user}".encode(), hashlib.sha256).hexdigest()[:32]


def session_group(session_id: int) -> str:
    """The channel-layer group through which any process can end a session."""
    return f"vp-session-{session_id}"


def session_live_group(session_id: int) -> str:
    """The channel-layer group of console pages watching a session live."""
    return f"vp-session-live-{session_id}"


def session_end_request(*, session: Session, actor: object | None, message: str = "") -> None:
    """Ask whichever process holds the session's socket to end it (through the channel layer).

    The end itself is recorded by that process; a session no process holds any more is ended
    by the abandoned-session sweep.
    """
    layer = get_channel_layer()
    if layer is not None:
        try:
            async_to_sync(layer.group_send)(
                session_group(session.pk),
                {"type": "session.end_requested", "reason": "ended_by_admin", "message": message},
            )
        except Exception as error:
            CHANNEL_LAYER_ERRORS.labels(operation="group_send").inc()
            raise ControlPlaneUnavailable(str(error)) from error
    audit_record(
        tenant=session.tenant_id, actor=actor, action="session.end_requested", target=session
    )


def sessions_end_for_revoked_key(*, key: object, actor: object | None = None) -> int:
    """End the live sessions that came in with a key just revoked (an API key, directly or
    through a client secret it minted; a widget key, through its tokens). The number asked."""
    field = "api_key" if isinstance(key, ApiKey) else "widget_key"
    with tenant_scope(key.tenant_id):  # type: ignore[attr-defined]
        live = list(Session.objects.filter(ended_at__isnull=True, **{field: key}))
    asked = 0
    for session in live:
        try:
            session_end_request(
                session=session, actor=actor, message="The key of this session was revoked."
            )
            asked += 1
        except ControlPlaneUnavailable:  # the revocation itself stands
            logger.warning("could not ask session %s to end", session.pk, exc_info=True)
    return asked


def session_start(
    *,
    tenant: Tenant,
    agent: Agent,
    channel: str,
    end_user: str,
    widget_key_id: int | None = None,
    api_key_id: int | None = None,
) -> Session:
    """Admit a new session and create it, or raise ``AccessDenied``.

    Admission is atomic across processes, with the database as the arbiter: the live sessions
    are counted and the new one created in one transaction that holds the tenant's row lock
    (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the IMMEDIATE transaction takes the
    database's write lock at BEGIN), so concurrent admissions of a tenant queue behind each
    other and never both see the last free slot. Only live sessions count (``heartbeat_at``
    within ``VP_SESSION_STALE_SECONDS``): a dead process's sessions stop blocking new ones. The
    slower checks (suspension, spend caps) only read and run before the lock.
    """
    admission_check_standing(tenant=tenant, agent=agent, widget_key_id=widget_key_id)
    # ``agent`` as the session runs it (``access.agent_runtime``): a published version's copy,
    # or the row itself: the draft on the console, else (a caller passing the row) the live one.
    running = agent.running_version
    if running is not None:
        agent_version_id = running.pk
    elif channel == Session.Channel.CONSOLE:
        agent_version_id = None
    else:
        agent_version_id = agent.live_version_id
    with tenant_scope(tenant), transaction.atomic():
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        admission_check_capacity(tenant=locked, channel=channel)
        # heartbeat_at starts at creation (auto_now_add): counted until its heartbeats stop.
        session = Session.objects.create(
            tenant=tenant,
            agent=agent,
            agent_version_id=agent_version_id,
            channel=channel,
            model=agent.model,
            end_user_hash=end_user_hash(tenant_id=tenant.pk, end_user=end_user),
            widget_key_id=widget_key_id,
            api_key_id=api_key_id,
        )
        signals.send_on_commit(signals.session_started, session_id=session.pk, tenant_id=tenant.pk)
        return session


class Heartbeat(NamedTuple):
    session_id: int
    tenant_id: int
    audio_in_ms: int
    audio_out_ms: int


def sessions_heartbeat(beats: Iterable[Heartbeat]) -> None:
    """Live sessions' signs of life (``agents.heartbeats``: a process's sessions together). One
    the sweep took for dead (its heartbeats were held up: a database outage longer than
    ``VP_SESSION_STALE_SECONDS``, a stalled process) is open again: its process is alive and
    will record the real end.

    One plain statement per tenant and chunk: built with the ORM (``Case(When(pk=…))`` for each
    session's audio) it cost 20 ms of CPU for 100 sessions, holding the GIL away from the
    relay's frames meanwhile (a 77 ms stall at N=100 in ``make bench``); by hand, 0.5 ms. The
    tenant filter is explicit (the scoped manager is not involved in raw SQL)."""
    by_tenant: dict[int, list[Heartbeat]] = {}
    for beat in beats:
        by_tenant.setdefault(beat.tenant_id, []).append(beat)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        for tenant_id, tenant_beats in by_tenant.items():
            for first in range(0, len(tenant_beats), HEARTBEAT_CHUNK):
                sql, params = _heartbeat_sql(
                    tenant_id, tenant_beats[first : first + HEARTBEAT_CHUNK], now
                )
                cursor.execute(sql, params)


HEARTBEAT_CHUNK = 200


def _heartbeat_sql(tenant_id: int, beats: list[Heartbeat], now: object) -> tuple[str, list]:
    table = connection.ops.quote_name(Session._meta.db_table)
    pk = connection.ops.quote_name(Session._meta.pk.column)
    audio_in, audio_out, ended_at, end_reason, heartbeat_at, tenant = (
        connection.ops.quote_name(Session._meta.get_field(name).column)
        for name in ("audio_in_ms", "audio_out_ms", "ended_at", "end_reason", "heartbeat_at",
                     "tenant")
    )  # fmt: skip
    whens = " ".join(["WHEN %s THEN %s"] * len(beats))
    ids = [beat.session_id for beat in beats]
    sql = (
        f"UPDATE {table} SET {heartbeat_at} = %s, "
        f"{audio_in} = CASE {pk} {whens} ELSE {audio_in} END, "
        f"{audio_out} = CASE {pk} {whens} ELSE {audio_out} END, "
        # Both read the row as it was: a session the sweep abandoned is open again.
        f"{ended_at} = CASE WHEN {end_reason} = %s THEN NULL ELSE {ended_at} END, "
        f"{end_reason} = CASE WHEN {end_reason} = %s THEN '' ELSE {end_reason} END "
        f"WHERE {tenant} = %s AND {pk} IN ({', '.join(['%s'] * len(beats))})"
    )
    params: list = [now]
    params += [value for beat in beats for value in (beat.session_id, beat.audio_in_ms)]
    params += [value for beat in beats for value in (beat.session_id, beat.audio_out_ms)]
    abandoned = Session.EndReason.ABANDONED.value
    params += [abandoned, abandoned, tenant_id, *ids]
    return sql, params


def session_heartbeat(
    *, session_id: int, tenant_id: int, audio_in_ms: int, audio_out_ms: int
) -> None:
    """One live session's sign of life (see ``sessions_heartbeat``)."""
    sessions_heartbeat([Heartbeat(session_id, tenant_id, audio_in_ms, audio_out_ms)])


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


def session_end_record(
    *,
    session_id: int,
    tenant_id: int,
    reason: str,
    audio_in_ms: int,
    audio_out_ms: int,
    ended_at: datetime | None = None,
    first_audio_ms: int | None = None,
) -> None:
    """Record the end once; a second call keeps the first reason. The sweep's "abandoned" (a
    guess from missing heartbeats) gives way to the session's own end arriving late (journaled
    during a database outage, replayed after a crash), which keeps its real time.

    ``ended_at`` is when the session really ended (an end journaled during a database outage is
    written later): now when not given. ``first_audio_ms``: the session's time to first answer
    audio (the relay's median over its turns), None when no turn was answered with audio.
    The session's cost is tallied soon after (the billing sweep catches up if the broker is down).
    """
    with tenant_scope(tenant_id):
        not_ended = Q(ended_at__isnull=True) | Q(end_reason=Session.EndReason.ABANDONED)
        updated = Session.objects.filter(not_ended, pk=session_id).update(
            ended_at=ended_at or timezone.now(),
            end_reason=reason,
            audio_in_ms=audio_in_ms,
            audio_out_ms=audio_out_ms,
            first_audio_ms=first_audio_ms,
        )
    if updated:
        enqueue_session_tally(session_id)
        signals.send_on_commit(signals.session_ended, session_id=session_id, tenant_id=tenant_id)


def sessions_sweep_abandoned(*, now: datetime | None = None) -> int:
    """End sessions whose process died without recording their end, at their last heartbeat.

    A session silent for ``VP_SESSION_STALE_SECONDS`` is ended with reason ``abandoned`` and
    ``ended_at`` = its last heartbeat (the last moment it was known alive, so its duration is
    not stretched to the sweep's time); its audio totals are those of that heartbeat. Only a
    session not yet ended is touched. It is a guess: a later heartbeat reopens the session, and
    the session's own end record replaces it. Returns how many.
    """
    cutoff = session_stale_cutoff(now)
    with scopes_disabled():
        stale = dict(
            Session.objects.filter(ended_at__isnull=True, heartbeat_at__lt=cutoff).values_list(
                "pk", "tenant_id"
            )
        )
        if not stale:
            return 0
        ended = Session.objects.filter(
            pk__in=stale, ended_at__isnull=True, heartbeat_at__lt=cutoff
        ).update(ended_at=F("heartbeat_at"), end_reason=Session.EndReason.ABANDONED)
    for session_id, tenant_id in stale.items():
        enqueue_session_tally(session_id)
        signals.send_on_commit(signals.session_ended, session_id=session_id, tenant_id=tenant_id)
    return ended


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
