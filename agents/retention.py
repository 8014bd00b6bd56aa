"""Retention and erasure of conversation content: what was said, and who said it.

Content lives in several tables (and, with recordings, in storage files). Each *content kind* is
registered here once and then serves both jobs:

* the retention sweep (``retention_sweep``, beat, hourly) deletes, per tenant, the content of
  sessions that ended longer ago than the tenant's window for that kind;
* erasure on request (``erasure_plan`` / ``erasure_run``) deletes every kind of content of one
  session or of every session of one end user.

A kind names which of the tenant's windows apply to it (the shortest one set wins: a webhook
payload holding a transcript and an analysis goes with the shorter of the two), the rows that
still hold content (``holding``), the field naming their session, and how to delete a batch of
them: whole rows (``rows_kind``, optionally one at a time through the kind's own delete
function, which removes its storage files), or only some fields blanked (``fields_kind``).

What stays: the ``Session`` rows and the usage ledger (billing needs both, and they hold no
content). Erasure also replaces the session's ``end_user_hash`` by ``ERASED`` (the same marker
for everyone), so that the sessions link neither to the person nor to each other.

Bounded work: every delete touches at most ``VP_RETENTION_BATCH_ROWS`` rows in its own short
transaction, so a tenant with millions of rows never holds a transaction for long; a sweep
stops at its time budget and the next one carries on. Safe to run twice at once (two beat
schedulers, a manual run during the beat's): every batch deletes only what is still there and
counts what it deleted, a row a concurrent sweep has locked is skipped (``skip_locked``), and a
sweep that deleted nothing writes no audit entry, so the audit log's counts add up to what went.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.access import PHONE_END_USER_PREFIX
from agents.models import (
    Recording,
    Session,
    SessionAnalysis,
    SessionSegment,
    SessionSummary,
    TranscriptItem,
    WebhookDelivery,
)
from agents.recording import BEST_EFFORT_SECONDS, CLOSE_WAIT_SECONDS
from agents.recordings import recording_delete
from agents.services import end_user_hash
from tenants.audit import audit_record
from tenants.models import ClientToken, Tenant
from tenants.scoping import scopes_disabled, tenant_scope

logger = logging.getLogger(__name__)

# The tenant's windows (fields of ``Tenant``), by what they keep.
TRANSCRIPTS = "retention_transcript_days"
RECORDINGS = "retention_recording_days"
ANALYSIS = "retention_analysis_days"

SWEEP_BUDGET_SECONDS = 240.0  # under the task's soft time limit; the next sweep carries on
# What an erased session's end_user_hash becomes: not a hash (those are 32 hex digits).
ERASED = "erased"
# A session's last transcript items may still be written this long after it ended (the
# recorder's retries), and its rolling summary shortly after: erasure waits this long after the
# end, so that nothing of the person arrives after it.
ERASURE_SETTLE_SECONDS = int(BEST_EFFORT_SECONDS + CLOSE_WAIT_SECONDS + 55)
# A client token's raw end-user id is read only while the token can be spent; this long after
# it expired the sweep blanks it.
CLIENT_TOKEN_END_USER_HOURS = 1


@dataclass(frozen=True)
class ContentKind:
    """One kind of conversation content. ``holding`` and ``delete`` run inside the tenant's
    scope; ``delete`` gets a queryset of at most ``VP_RETENTION_BATCH_ROWS`` rows still holding
    content and returns how many it deleted (or blanked)."""

    name: str
    windows: tuple[str, ...]
    holding: Callable[[], QuerySet]
    delete: Callable[[QuerySet], int]
    session_field: str = "session_id"

    def window_days(self, tenant: Tenant) -> int | None:
        """The shortest of the tenant's windows that apply; None keeps the content forever."""
        days = [getattr(tenant, window) for window in self.windows]
        set_days = [value for value in days if value is not None]
        return min(set_days) if set_days else None

    def of_sessions(self, sessions: QuerySet | list[int]) -> QuerySet:
        return self.holding().filter(**{f"{self.session_field}__in": sessions})


def rows_kind(
    name: str,
    *,
    model: type[models.Model],
    windows: tuple[str, ...],
    session_field: str = "session_id",
    delete_each: Callable[[Any], object] | None = None,
) -> ContentKind:
    """Content that is whole rows. With ``delete_each`` (e.g. ``recording_delete``, which
    removes the row's storage file too) each row is deleted through it, locked first so that a
    concurrent sweep neither deletes it twice nor counts it twice."""

    def holding() -> QuerySet:
        return model.objects.all()  # type: ignore[attr-defined]

    def delete(rows: QuerySet) -> int:
        if delete_each is None:
            with transaction.atomic():
                _, per_model = rows.delete()
            return per_model.get(model._meta.label, 0)
        deleted = 0
        for pk in list(rows.values_list("pk", flat=True)):
            with transaction.atomic():
                row = holding().select_for_update(skip_locked=True).filter(pk=pk).first()
                if row is None:  # gone already, or a concurrent sweep holds it
                    continue
                delete_each(row)
                deleted += 1
        return deleted

    return ContentKind(name, windows, holding, delete, session_field)


def fields_kind(
    name: str,
    *,
    model: type[models.Model],
    windows: tuple[str, ...],
    blank: dict[str, Any],
    session_field: str = "session_id",
) -> ContentKind:
    """Content that is some fields of rows that stay (``blank``: each field's empty value)."""

    def holding() -> QuerySet:
        return model.objects.exclude(**blank)  # type: ignore[attr-defined]

    def delete(rows: QuerySet) -> int:
        with transaction.atomic():
            return rows.update(**blank)  # rows is of holding(): blanked ones are not counted

    return ContentKind(name, windows, holding, delete, session_field)


_kinds: dict[str, ContentKind] = {}


def register(kind: ContentKind) -> ContentKind:
    """Add a content kind (once per name): retention and erasure cover it from then on."""
    if kind.name in _kinds:
        raise ValueError(f"content kind {kind.name!r} is registered already")
    unknown = set(kind.windows) - {TRANSCRIPTS, RECORDINGS, ANALYSIS}
    if not kind.windows or unknown:
        raise ValueError(f"content kind {kind.name!r}: unknown windows {sorted(unknown)}")
    _kinds[kind.name] = kind
    return kind


def kinds() -> list[ContentKind]:
    return list(_kinds.values())


# What the platform stores of a conversation today. Segments stay (they say when the upstream
# was changed and why); only the summary a segment was seeded with is content.
register(rows_kind("transcripts", model=TranscriptItem, windows=(TRANSCRIPTS,)))
register(rows_kind("summaries", model=SessionSummary, windows=(TRANSCRIPTS,)))
register(
    fields_kind(
        "segment_summaries",
        model=SessionSegment,
        windows=(TRANSCRIPTS,),
        blank={"seed_summary": ""},
    )  # fmt: skip
)
register(rows_kind("analysis", model=SessionAnalysis, windows=(ANALYSIS,)))
# A recording is a row and a file in storage: recording_delete removes both.
register(
    rows_kind("recordings", model=Recording, windows=(RECORDINGS,), delete_each=recording_delete)
)
# A delivery's payload holds the transcript and the analysis: it goes with the shorter window
# (its attempts' log with it).
register(rows_kind("webhook_deliveries", model=WebhookDelivery, windows=(TRANSCRIPTS, ANALYSIS)))


# --- deleting in batches -----------------------------------------------------------------


def _batch_rows() -> int:
    return settings.VP_RETENTION_BATCH_ROWS


def _purge(kind: ContentKind, rows: QuerySet, *, deadline: float | None = None) -> int:
    """Delete ``rows`` (a queryset of ``kind.holding()``) batch by batch. Stops when none are
    left, at the deadline, or when a batch deleted nothing (a concurrent run holds those rows
    and will finish them)."""
    total = 0
    while True:
        batch = list(rows.order_by("pk").values_list("pk", flat=True)[: _batch_rows()])
        if not batch:
            return total
        deleted = kind.delete(kind.holding().filter(pk__in=batch))
        total += deleted
        if deleted == 0 or (deadline is not None and time.monotonic() >= deadline):
            return total


# --- the retention sweep -------------------------------------------------------------------


@dataclass
class SweepReport:
    tenant_id: int
    deleted: dict[str, dict[str, Any]] = field(default_factory=dict)


def _ended_before(cutoff: datetime) -> QuerySet:
    """The tenant's sessions that ended before ``cutoff`` (running ones have no end)."""
    return Session.objects.filter(ended_at__lt=cutoff).values("pk")


def tenant_retention_sweep(
    *, tenant: Tenant, now: datetime | None = None, deadline: float | None = None
) -> SweepReport:
    """Delete what is past the tenant's windows; one audit entry (counts per kind, each
    kind's window, no content) when anything went."""
    now = now or timezone.now()
    report = SweepReport(tenant_id=tenant.pk)
    with tenant_scope(tenant):
        for kind in kinds():
            days = kind.window_days(tenant)
            if days is None:
                continue
            cutoff = now - timedelta(days=days)
            deleted = _purge(kind, kind.of_sessions(_ended_before(cutoff)), deadline=deadline)
            if deleted:
                report.deleted[kind.name] = {
                    "deleted": deleted,
                    "window_days": days,
                    "ended_before": cutoff.isoformat(timespec="seconds"),
                }
            if deadline is not None and time.monotonic() >= deadline:
                break
    if report.deleted:
        audit_record(
            tenant=tenant.pk, actor=None, action="retention.swept", target_type="tenant",
            target_label=tenant.slug, changes={"deleted": report.deleted},
        )  # fmt: skip
    return report


def retention_sweep(
    *, now: datetime | None = None, budget_seconds: float = SWEEP_BUDGET_SECONDS
) -> list[SweepReport]:
    """Every tenant with a window set, then the raw end-user ids of long-expired client tokens.
    Reports only the tenants something was deleted for."""
    now = now or timezone.now()
    deadline = time.monotonic() + budget_seconds
    with_window = Q()
    for window in (TRANSCRIPTS, RECORDINGS, ANALYSIS):
        with_window |= Q(**{f"{window}__isnull": False})
    reports = []
    for tenant in Tenant.objects.filter(with_window).order_by("pk"):
        report = tenant_retention_sweep(tenant=tenant, now=now, deadline=deadline)
        if report.deleted:
            reports.append(report)
        if time.monotonic() >= deadline:
            logger.warning("retention sweep stopped at its time budget; the next one goes on")
            break
    forgotten = client_tokens_forget_end_users(now=now)
    if forgotten:
        logger.info("retention sweep: forgot the end user of %s expired client tokens", forgotten)
    return reports


def client_tokens_forget_end_users(*, now: datetime | None = None) -> int:
    """Blank the raw end-user id of client tokens expired an hour ago (read only while a token
    can be spent; the session keeps a hash). Across tenants, in batches."""
    cutoff = (now or timezone.now()) - timedelta(hours=CLIENT_TOKEN_END_USER_HOURS)
    total = 0
    with scopes_disabled():  # housekeeping of every tenant's expired tokens
        stale = ClientToken.objects.filter(expires_at__lt=cutoff).exclude(end_user="")
        while batch := list(stale.order_by("pk").values_list("pk", flat=True)[: _batch_rows()]):
            with transaction.atomic():
                updated = stale.filter(pk__in=batch).update(end_user="")
            total += updated
            if not updated:
                break
    return total


# --- erasure on request --------------------------------------------------------------------


class ErasureError(ValueError):
    """An erasure request that names nothing erasable (shown to whoever asked)."""


@dataclass
class ErasurePlan:
    """What an erasure would touch: ``session_ids`` now; ``waiting``, sessions still running
    or ended under ``ERASURE_SETTLE_SECONDS`` ago (erase again once they settle)."""

    tenant_id: int
    scope: str  # "end_user" or "session"
    session_ids: list[int]
    waiting: int
    end_user_hash: str = ""
    content: dict[str, int] = field(default_factory=dict)

    @property
    def content_text(self) -> str:
        """What the sessions hold, by kind: "transcripts 4, summaries 2, …"."""
        return ", ".join(
            f"{name.replace('_', ' ')} {count}" for name, count in self.content.items()
        )


@dataclass
class ErasureReport:
    sessions: int
    deleted: dict[str, int]
    waiting: int
    client_tokens: int = 0


def end_user_hash_clean(value: str) -> str:
    """A hash as the session page shows it: 32 hexadecimal digits, any case."""
    value = value.strip().lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise ErasureError(
            "An end-user hash is 32 hexadecimal digits, as the session page shows it."
        )
    return value


def _as_stored(tenant: Tenant, end_user: str) -> str:
    """The end user id as sessions were started with it. A phone caller, given as
    ``phone:+14155550100``, was started with that number hashed (the number is never kept)."""
    if end_user.startswith(PHONE_END_USER_PREFIX + "+"):
        caller = end_user.removeprefix(PHONE_END_USER_PREFIX)
        return PHONE_END_USER_PREFIX + end_user_hash(tenant_id=tenant.pk, end_user=caller)
    return end_user


def erasure_plan(
    *,
    tenant: Tenant,
    end_user: str | None = None,
    hashed: str | None = None,
    session_id: int | None = None,
    now: datetime | None = None,
) -> ErasurePlan:
    """Which sessions an erasure of one end user (their raw id as the tenant knows it, or its
    hash) or of one session covers, and how much content they hold."""
    if sum(value is not None for value in (end_user, hashed, session_id)) != 1:
        raise ErasureError("Name exactly one end user id, end-user hash or session.")
    settled_before = (now or timezone.now()) - timedelta(seconds=ERASURE_SETTLE_SECONDS)
    with tenant_scope(tenant):
        if session_id is not None:
            sessions = Session.objects.filter(pk=session_id)
            if not sessions.exists():
                raise ErasureError(f"No session {session_id} in this tenant.")
            scope, wanted = "session", ""
        else:
            if end_user is not None:
                if not end_user.strip():
                    raise ErasureError("The end user id is empty.")
                wanted = end_user_hash(tenant_id=tenant.pk, end_user=_as_stored(tenant, end_user))
            else:
                wanted = end_user_hash_clean(hashed or "")
            sessions = Session.objects.filter(end_user_hash=wanted)
            scope = "end_user"
        settled = sessions.filter(ended_at__lt=settled_before)
        session_ids = list(settled.order_by("pk").values_list("pk", flat=True))
        waiting = sessions.exclude(ended_at__lt=settled_before).count()
        content = {kind.name: kind.of_sessions(session_ids).count() for kind in kinds()}
    return ErasurePlan(
        tenant_id=tenant.pk, scope=scope, session_ids=session_ids, waiting=waiting,
        end_user_hash=wanted, content=content,
    )  # fmt: skip


def erasure_run(*, plan: ErasurePlan, actor: AbstractBaseUser | None) -> ErasureReport:
    """Delete every kind of content of the plan's sessions, then unlink the sessions from the
    person (``end_user_hash`` = ``ERASED``), session by session, so that an interrupted run is
    finished by running it again. Audited: who, how many sessions, counts; no content, and not
    the hash (it would keep the link the erasure removes)."""
    deleted = {kind.name: 0 for kind in kinds()}
    with tenant_scope(plan.tenant_id):
        for session_id in plan.session_ids:
            for kind in kinds():
                deleted[kind.name] += _purge(kind, kind.of_sessions([session_id]))
            Session.objects.filter(pk=session_id).update(end_user_hash=ERASED)
        tokens = 0
        if plan.scope == "end_user" and plan.end_user_hash:
            tokens = _client_tokens_erase(tenant_id=plan.tenant_id, hashed=plan.end_user_hash)
    report = ErasureReport(
        sessions=len(plan.session_ids), deleted=deleted, waiting=plan.waiting, client_tokens=tokens
    )
    target = None
    if plan.scope == "session" and plan.session_ids:
        with tenant_scope(plan.tenant_id):
            target = Session.objects.filter(pk=plan.session_ids[0]).first()
    audit_record(
        tenant=plan.tenant_id, actor=actor, action=f"erasure.{plan.scope}", target=target,
        target_type="session" if plan.scope == "session" else "end_user",
        changes={"sessions": report.sessions, "deleted": deleted, "waiting": plan.waiting,
                 "client_tokens": tokens},
    )  # fmt: skip
    return report


def _client_tokens_erase(*, tenant_id: int, hashed: str) -> int:
    """Blank the raw end-user id on the tenant's client tokens minted for this person (only
    tokens not yet swept hold one)."""
    matching = [
        pk
        for pk, raw in ClientToken.objects.exclude(end_user="")
        .values_list("pk", "end_user")
        .iterator(chunk_size=2000)
        if end_user_hash(tenant_id=tenant_id, end_user=raw) == hashed
    ]
    return ClientToken.objects.filter(pk__in=matching).update(end_user="")
