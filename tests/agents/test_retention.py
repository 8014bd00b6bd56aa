"""Retention windows and erasure on request (agents/retention.py): per content kind, per tenant.

Each content kind has one row in ``CONTENT`` (how a test gives a session content of that kind,
and how much of it a session holds); every test that is about kinds runs for every row, and a
kind registered without a row fails ``test_every_registered_kind_has_a_test_row``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents import retention, tasks
from agents.configuration import agent_create
from agents.models import (
    Recording,
    Session,
    SessionAnalysis,
    SessionSegment,
    SessionSummary,
    TranscriptItem,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from agents.recordings import recording_storage
from agents.services import end_user_hash
from tenants.models import AuditEvent, ClientToken, Tenant
from tenants.scoping import scopes_disabled, tenant_scope

SAID = "my card is 4111 1111 1111 1111"


def add_transcript(session: Session) -> None:
    for sequence, role in enumerate(["user", "assistant"]):
        TranscriptItem.objects.create(
            tenant_id=session.tenant_id, session=session, sequence=sequence,
            upstream_item_id=f"item_{session.pk}_{sequence}", role=role, text=SAID,
        )  # fmt: skip


def count_transcript(session: Session) -> int:
    return TranscriptItem.objects.filter(session=session).count()


def add_summary(session: Session) -> None:
    SessionSummary.objects.create(
        tenant_id=session.tenant_id, session=session, text=SAID, prompt=SAID, output=SAID,
        revision=1, through_sequence=1, method="local",
    )  # fmt: skip


def count_summary(session: Session) -> int:
    return SessionSummary.objects.filter(session=session).count()


def add_segment_summary(session: Session) -> None:
    SessionSegment.objects.create(
        tenant_id=session.tenant_id, session=session, index=1,
        upstream_session_id=f"sess_{session.pk}", reason="max_duration", seed_summary=SAID,
    )  # fmt: skip


def count_segment_summary(session: Session) -> int:
    return SessionSegment.objects.filter(session=session).exclude(seed_summary="").count()


def add_analysis(session: Session) -> None:
    SessionAnalysis.objects.create(
        tenant_id=session.tenant_id, session=session, status="done", method="local",
        summary=SAID, data={"card": SAID}, requested_at=session.started_at,
    )  # fmt: skip


def count_analysis(session: Session) -> int:
    return SessionAnalysis.objects.filter(session=session).count()


def add_webhook_delivery(session: Session) -> None:
    endpoint = WebhookEndpoint.objects.filter(tenant_id=session.tenant_id).first()
    if endpoint is None:
        endpoint = WebhookEndpoint.objects.create(
            tenant_id=session.tenant_id,
            url="https://hooks.example.com/vp",
            events=["session.ended"],
        )
    delivery = WebhookDelivery.objects.create(
        tenant_id=session.tenant_id, endpoint=endpoint, session=session,
        event_type="session.ended", event_id=f"evt_{session.pk}",
        idempotency_key=f"{endpoint.pk}:evt_{session.pk}", payload={"transcript": [SAID]},
        status="succeeded", next_attempt_at=session.started_at,
    )  # fmt: skip
    WebhookAttempt.objects.create(
        tenant_id=session.tenant_id, delivery=delivery, number=1, http_status=200,
        attempted_at=session.started_at,
    )  # fmt: skip


def count_webhook_delivery(session: Session) -> int:
    return WebhookDelivery.objects.filter(session=session).count()


def add_recording(session: Session) -> None:
    storage = recording_storage()
    name = storage.save(
        f"{session.tenant_id}/{session.pk}.ogg", ContentFile(b"OggS" + SAID.encode())
    )
    Recording.objects.create(
        tenant_id=session.tenant_id, session=session, file_name=name, status="ready",
        format="audio/ogg", duration_ms=1000, bytes=storage.size(name),
    )  # fmt: skip


def count_recording(session: Session) -> int:
    """Its rows, plus any file of the session's left in storage without a row (a recording
    deleted but its file left behind counts)."""
    rows = set(Recording.objects.filter(session=session).values_list("file_name", flat=True))
    storage = recording_storage()
    folder = str(session.tenant_id)
    names = storage.listdir(folder)[1] if storage.exists(folder) else []
    orphans = [
        name for name in names
        if name.startswith(f"{session.pk}.") and f"{folder}/{name}" not in rows
    ]  # fmt: skip
    return len(rows) + len(orphans)


# kind name -> (give a session content of this kind, how much content a session holds, what
# the first gives). Both run inside the session's tenant scope. A kind whose content is files
# counts the files that exist too (rows + files), so that a file left behind fails.
CONTENT = {
    "transcripts": (add_transcript, count_transcript, 2),
    "summaries": (add_summary, count_summary, 1),
    "segment_summaries": (add_segment_summary, count_segment_summary, 1),
    "analysis": (add_analysis, count_analysis, 1),
    "recordings": (add_recording, count_recording, 1),
    "webhook_deliveries": (add_webhook_delivery, count_webhook_delivery, 1),
}
ALL_KINDS = sorted(CONTENT)
FULL = {name: gives for name, (_, _, gives) in CONTENT.items()}  # a session given everything
TWICE = {name: 2 * gives for name, gives in FULL.items()}
NONE = {name: 0 for name in CONTENT}


def kind_named(name: str) -> retention.ContentKind:
    return next(kind for kind in retention.kinds() if kind.name == name)


def test_every_registered_kind_has_a_test_row():
    assert {kind.name for kind in retention.kinds()} == set(CONTENT)


@pytest.fixture
def agents_ab(world):
    return {
        tenant.pk: agent_create(
            tenant=tenant, actor=owner, fields={"name": "Support", "provider": "local"}
        )
        for tenant, owner in ((world.tenant_a, world.owner_a), (world.tenant_b, world.owner_b))
    }


def make_session(tenant, agent, *, ended_days_ago=None, ended_seconds_ago=None, end_user="alice"):
    """A session of ``end_user`` that ended so long ago (or is still running)."""
    with tenant_scope(tenant):
        session = Session.objects.create(
            tenant=tenant, agent=agent, channel="widget", model="gpt-realtime-2",
            end_user_hash=end_user_hash(tenant_id=tenant.pk, end_user=end_user),
        )  # fmt: skip
        ago = None
        if ended_days_ago is not None:
            ago = timedelta(days=ended_days_ago)
        elif ended_seconds_ago is not None:
            ago = timedelta(seconds=ended_seconds_ago)
        if ago is not None:
            Session.objects.filter(pk=session.pk).update(
                ended_at=timezone.now() - ago, end_reason="client_closed"
            )
            session.refresh_from_db()
    return session


def give_all_content(session: Session) -> None:
    with tenant_scope(session.tenant_id):
        for add, _, _ in CONTENT.values():
            add(session)


def held(session: Session) -> dict[str, int]:
    with tenant_scope(session.tenant_id):
        return {name: count(session) for name, (_, count, _) in CONTENT.items()}


def set_windows(tenant: Tenant, **days) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(**days)


def set_all_windows(tenant: Tenant, days: int) -> None:
    """Every window the same: every kind of content goes at once."""
    set_windows(
        tenant, retention_transcript_days=days, retention_recording_days=days,
        retention_analysis_days=days,
    )  # fmt: skip


def audit_of(tenant, action: str) -> list[AuditEvent]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.filter(action=action).order_by("pk"))


# --- the retention sweep --------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_KINDS)
def test_sweep_deletes_content_past_the_window_and_nothing_else(world, agents_ab, name):
    kind = kind_named(name)
    add, count, _ = CONTENT[name]
    a, b = world.tenant_a, world.tenant_b
    set_windows(a, **{window: 30 for window in kind.windows})
    old = make_session(a, agents_ab[a.pk], ended_days_ago=31)
    recent = make_session(a, agents_ab[a.pk], ended_days_ago=29)
    running = make_session(a, agents_ab[a.pk])
    with tenant_scope(a):  # a session that started long ago and still runs is never touched
        Session.objects.filter(pk=running.pk).update(started_at=timezone.now() - timedelta(99))
    other_tenant = make_session(b, agents_ab[b.pk], ended_days_ago=400)
    for session in (old, recent, running, other_tenant):
        with tenant_scope(session.tenant_id):
            add(session)
            assert count(session) > 0
    with tenant_scope(a):
        before = count(old)

    assert tasks.retention_sweep() == 1

    with tenant_scope(a):
        assert (count(old), count(recent), count(running)) == (0, before, before)
    with tenant_scope(b):
        assert count(other_tenant) == before
    with scopes_disabled():  # the sessions stay, for billing
        assert Session.objects.filter(pk__in=[old.pk, recent.pk, running.pk]).count() == 3
    [entry] = audit_of(a, "retention.swept")
    assert entry.actor is None
    assert entry.changes["deleted"][name]["deleted"] == before
    assert entry.changes["deleted"][name]["window_days"] == 30
    assert SAID not in json.dumps(entry.changes)
    assert audit_of(b, "retention.swept") == []

    # Idempotent: a second run finds nothing and writes no audit entry.
    assert tasks.retention_sweep() == 0
    assert len(audit_of(a, "retention.swept")) == 1


@pytest.mark.parametrize("name", ALL_KINDS)
def test_other_windows_leave_a_kind_alone(world, agents_ab, name):
    kind = kind_named(name)
    add, count, _ = CONTENT[name]
    others = {retention.TRANSCRIPTS, retention.RECORDINGS, retention.ANALYSIS} - set(kind.windows)
    set_windows(world.tenant_a, **{window: 1 for window in others})
    session = make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=500)
    with tenant_scope(world.tenant_a):
        add(session)
        before = count(session)
    retention.retention_sweep()
    with tenant_scope(world.tenant_a):
        assert count(session) == before > 0


def test_windows_are_per_tenant(world, agents_ab):
    a, b = world.tenant_a, world.tenant_b
    set_all_windows(a, 10)
    set_all_windows(b, 100)
    a_old = make_session(a, agents_ab[a.pk], ended_days_ago=50)
    b_old = make_session(b, agents_ab[b.pk], ended_days_ago=50)
    give_all_content(a_old)
    give_all_content(b_old)
    retention.retention_sweep()
    assert held(a_old) == {name: 0 for name in CONTENT}
    assert held(b_old) == FULL


def test_sweep_deletes_in_bounded_batches(world, agents_ab, settings):
    settings.VP_RETENTION_BATCH_ROWS = 3
    set_windows(world.tenant_a, retention_transcript_days=1)
    session = make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=2)
    with tenant_scope(world.tenant_a):
        for sequence in range(10):
            TranscriptItem.objects.create(
                tenant=world.tenant_a, session=session, sequence=sequence,
                upstream_item_id=f"i{sequence}", role="user", text=SAID,
            )  # fmt: skip
    with CaptureQueriesContext(connection) as queries:
        retention.retention_sweep()
    deletes = [
        q["sql"] for q in queries if q["sql"].startswith('DELETE FROM "agents_transcriptitem"')
    ]
    assert len(deletes) == 4  # 3 + 3 + 3 + 1, each its own statement and transaction
    assert held(session)["transcripts"] == 0


def test_two_sweeps_at_once_delete_once_and_count_once(world, agents_ab, monkeypatch):
    """The second sweep runs in the middle of the first's batch (between choosing rows and
    deleting them): everything goes once, and the audit log's counts add up to the rows."""
    set_all_windows(world.tenant_a, 1)
    sessions = [make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=3)]
    sessions.append(make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=4))
    for session in sessions:
        give_all_content(session)
    kind = kind_named("transcripts")
    original = kind.delete
    interleaved = []

    def delete_after_a_concurrent_sweep(rows):
        if not interleaved:
            interleaved.append(True)
            retention.tenant_retention_sweep(tenant=Tenant.objects.get(pk=world.tenant_a.pk))
        return original(rows)

    monkeypatch.setitem(
        retention._kinds, "transcripts", replace(kind, delete=delete_after_a_concurrent_sweep)
    )
    retention.retention_sweep()
    assert interleaved
    for session in sessions:
        assert held(session) == {name: 0 for name in CONTENT}
    totals: dict[str, int] = {}
    for entry in audit_of(world.tenant_a, "retention.swept"):
        for name, counted in entry.changes["deleted"].items():
            totals[name] = totals.get(name, 0) + counted["deleted"]
    assert totals == TWICE


def test_sweep_forgets_raw_end_users_of_long_expired_tokens(world, agents_ab):
    agent = agents_ab[world.tenant_a.pk]
    now = timezone.now()
    with tenant_scope(world.tenant_a):
        for name, expired_ago in (("old", timedelta(hours=2)), ("fresh", timedelta(minutes=5))):
            ClientToken.objects.create(
                tenant=world.tenant_a, kind="widget", hashed_token=name, agent=agent,
                end_user=f"user-{name}", expires_at=now - expired_ago,
            )  # fmt: skip
    retention.retention_sweep()
    with tenant_scope(world.tenant_a):
        tokens = dict(ClientToken.objects.values_list("hashed_token", "end_user"))
    assert tokens == {"old": "", "fresh": "user-fresh"}


# --- erasure --------------------------------------------------------------------------------


@pytest.fixture
def people(world, agents_ab):
    a = world.tenant_a
    agent = agents_ab[a.pk]
    alice = [make_session(a, agent, ended_days_ago=1), make_session(a, agent, ended_days_ago=9)]
    alice_running = make_session(a, agent)
    bob = make_session(a, agent, ended_days_ago=1, end_user="bob")
    alice_in_b = make_session(world.tenant_b, agents_ab[world.tenant_b.pk], ended_days_ago=1)
    for session in [*alice, alice_running, bob, alice_in_b]:
        give_all_content(session)
    return {"alice": alice, "alice_running": alice_running, "bob": bob, "alice_in_b": alice_in_b}


def test_erasing_an_end_user_leaves_nothing_of_theirs_and_everything_else(world, people):
    plan = retention.erasure_plan(tenant=world.tenant_a, end_user="alice")
    assert (len(plan.session_ids), plan.waiting) == (2, 1)
    assert plan.content == TWICE
    report = retention.erasure_run(plan=plan, actor=world.owner_a)
    assert report.sessions == 2 and report.deleted == plan.content

    for session in people["alice"]:
        assert held(session) == NONE
    assert held(people["bob"]) == FULL
    assert held(people["alice_in_b"]) == FULL  # another tenant's "alice" is someone else
    assert held(people["alice_running"]) == FULL  # running: erased once it has settled
    with tenant_scope(world.tenant_a):
        hashes = dict(Session.objects.values_list("pk", "end_user_hash"))
        segments = SessionSegment.objects.filter(session__in=people["alice"]).count()
    assert [hashes[s.pk] for s in people["alice"]] == [retention.ERASED, retention.ERASED]
    assert hashes[people["bob"].pk] == end_user_hash(tenant_id=world.tenant_a.pk, end_user="bob")
    assert segments == 2  # the segment rows stay, without the summary they started from
    assert retention.erasure_plan(tenant=world.tenant_a, end_user="alice").session_ids == []

    [entry] = audit_of(world.tenant_a, "erasure.end_user")
    assert entry.actor == world.owner_a
    assert entry.changes["sessions"] == 2 and entry.changes["waiting"] == 1
    written = json.dumps(entry.changes) + entry.target_label + entry.target_id
    assert SAID not in written and "alice" not in written and plan.end_user_hash not in written


def test_erasure_by_hash_is_the_same_as_by_raw_id(world, people):
    hashed = end_user_hash(tenant_id=world.tenant_a.pk, end_user="alice")
    by_hash = retention.erasure_plan(tenant=world.tenant_a, hashed=hashed.upper())
    by_id = retention.erasure_plan(tenant=world.tenant_a, end_user="alice")
    assert by_hash.session_ids == by_id.session_ids == sorted(s.pk for s in people["alice"])
    for bad in ("", "xyz", "g" * 32, hashed[:31]):
        with pytest.raises(retention.ErasureError, match="32 hexadecimal digits"):
            retention.erasure_plan(tenant=world.tenant_a, hashed=bad)
    with pytest.raises(retention.ErasureError, match="exactly one"):
        retention.erasure_plan(tenant=world.tenant_a, end_user="alice", hashed=hashed)
    with pytest.raises(retention.ErasureError, match="No session"):
        retention.erasure_plan(tenant=world.tenant_a, session_id=people["alice_in_b"].pk)


def test_a_phone_caller_is_erased_by_their_number(world, agents_ab):
    from agents.telephony_views import phone_caller_end_user

    stored = phone_caller_end_user(tenant_id=world.tenant_a.pk, caller="+14155550100")
    call = make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=1,
                        end_user=stored)  # fmt: skip
    other = make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=1,
                         end_user=phone_caller_end_user(tenant_id=world.tenant_a.pk,
                                                        caller="+14155550111"))  # fmt: skip
    plan = retention.erasure_plan(tenant=world.tenant_a, end_user="phone:+14155550100")
    assert plan.session_ids == [call.pk] and other.pk not in plan.session_ids


def test_erasing_one_session(world, people):
    target, other = people["alice"]
    plan = retention.erasure_plan(tenant=world.tenant_a, session_id=target.pk)
    retention.erasure_run(plan=plan, actor=None)
    assert held(target) == NONE and held(other) == FULL
    [entry] = audit_of(world.tenant_a, "erasure.session")
    assert entry.target_id == str(target.pk) and entry.changes["sessions"] == 1


def test_a_just_ended_session_waits_before_erasure(world, agents_ab):
    session = make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_seconds_ago=10)
    give_all_content(session)
    plan = retention.erasure_plan(tenant=world.tenant_a, session_id=session.pk)
    assert (plan.session_ids, plan.waiting) == ([], 1)
    later = timezone.now() + timedelta(seconds=retention.ERASURE_SETTLE_SECONDS)
    plan = retention.erasure_plan(tenant=world.tenant_a, session_id=session.pk, now=later)
    assert plan.session_ids == [session.pk]


def test_erasure_forgets_the_raw_id_on_client_tokens(world, people, agents_ab):
    agent = agents_ab[world.tenant_a.pk]
    with tenant_scope(world.tenant_a):
        for name, end_user in (("t1", "alice"), ("t2", "bob")):
            ClientToken.objects.create(
                tenant=world.tenant_a, kind="widget", hashed_token=name, agent=agent,
                end_user=end_user, expires_at=timezone.now() + timedelta(minutes=1),
            )  # fmt: skip
    hashed = end_user_hash(tenant_id=world.tenant_a.pk, end_user="alice")
    report = retention.erasure_run(
        plan=retention.erasure_plan(tenant=world.tenant_a, hashed=hashed), actor=None
    )
    assert report.client_tokens == 1
    with tenant_scope(world.tenant_a):
        assert dict(ClientToken.objects.values_list("hashed_token", "end_user")) == {
            "t1": "", "t2": "bob",
        }  # fmt: skip


def test_invoices_are_unchanged_by_erasure(world, people, agents_ab):
    from datetime import UTC, date, datetime

    from billing.models import Invoice, InvoiceLine, UsageEvent
    from billing.services import invoice_close_month, invoices_close_previous_month
    from tests.billing.conftest import record

    a = world.tenant_a
    openai_agent = agent_create(
        tenant=a, actor=world.owner_a,
        fields={"name": "Sales", "provider": "openai", "model": "gpt-realtime-2"},
    )  # fmt: skip
    sessions = [*people["alice"], people["bob"]]
    for number, session in enumerate(sessions):
        when = datetime(2026, 10, 3 + number, tzinfo=UTC)
        record(a, openai_agent, f"resp_{number}", when, session=session,
               audio_in=10_000 * (number + 1), audio_out=2_000, text_out=300)  # fmt: skip
    october, after = date(2026, 10, 1), datetime(2026, 11, 2, tzinfo=UTC)

    def billed():
        with tenant_scope(a):
            invoice = Invoice.objects.get(month=october)
            lines = list(
                InvoiceLine.objects.filter(invoice=invoice)
                .order_by("position")
                .values_list(
                    "agent_name", "model", "token_type", "quantity", "unit_price", "amount"
                )
            )
            events = list(
                UsageEvent.objects.order_by("pk").values_list(
                    "upstream_response_id", "session_id", "invoice_id", "input_audio_tokens"
                )
            )
        return (invoice.number, invoice.provider_total, invoice.billed_total,
                invoice.event_count, lines, events)  # fmt: skip

    invoice_close_month(tenant_id=a.pk, month=october, now=after)
    before = billed()
    assert before[3] == 3 and before[1] > 0
    retention.erasure_run(
        plan=retention.erasure_plan(tenant=a, end_user="alice"), actor=world.owner_a
    )
    retention.erasure_run(
        plan=retention.erasure_plan(tenant=a, session_id=people["bob"].pk), actor=world.owner_a
    )
    assert billed() == before
    # Generating again changes nothing either.
    invoice_close_month(tenant_id=a.pk, month=october, now=after)
    invoices_close_previous_month(now=after)
    assert billed() == before
    with tenant_scope(a):
        assert Invoice.objects.count() == 1


# --- management commands --------------------------------------------------------------------


def test_erase_command_dry_run_then_for_real(world, people, capsys):
    call_command("erase", "--tenant", "tenant-a", "--end-user", "alice", "--dry-run")
    out = capsys.readouterr().out
    twice = ", ".join(
        f"{kind.name.replace('_', ' ')} {TWICE[kind.name]}" for kind in retention.kinds()
    )
    assert f"2 session(s) to erase ({twice})" in out
    assert "1 still running" in out and "dry run: nothing changed" in out
    assert all(held(session) == FULL for session in people["alice"])
    assert audit_of(world.tenant_a, "erasure.end_user") == []

    hashed = end_user_hash(tenant_id=world.tenant_a.pk, end_user="alice")
    call_command("erase", "--tenant", "tenant-a", "--end-user-hash", hashed)
    assert "erased 2 session(s): transcripts 4" in capsys.readouterr().out
    assert all(held(session) == NONE for session in people["alice"])
    assert held(people["bob"]) == FULL

    call_command("erase", "--tenant", "tenant-a", "--session", str(people["bob"].pk))
    assert held(people["bob"]) == NONE
    assert held(people["alice_in_b"]) == FULL


def test_erase_command_refuses_bad_input(world, people):
    with pytest.raises(CommandError, match="no tenant"):
        call_command("erase", "--tenant", "nope", "--end-user", "alice")
    with pytest.raises(CommandError, match="No session"):
        call_command("erase", "--tenant", "tenant-a", "--session", str(people["alice_in_b"].pk))
    with pytest.raises(CommandError, match="32 hexadecimal"):
        call_command("erase", "--tenant", "tenant-a", "--end-user-hash", "abc")
    with pytest.raises(CommandError):
        call_command("erase", "--tenant", "tenant-a")  # names nobody
    assert held(people["alice_in_b"]) == FULL


def test_retention_sweep_command(world, people, capsys):
    set_all_windows(world.tenant_a, 5)
    call_command("retention_sweep")
    out = capsys.readouterr().out
    assert f"tenant {world.tenant_a.pk}: transcripts 2 (window 5 d)" in out
    old = people["alice"][1]  # ended 9 days ago; the other ended 1 day ago
    assert held(old) == NONE and held(people["alice"][0]) == FULL


# --- the mechanism for kinds to come (recordings with files, JSON payloads) -------------------


def test_a_kind_with_files_deletes_each_row_through_its_own_function(world, agents_ab, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    """As recordings will: ``delete_each`` removes the row's file and the row, once per row (a
    second sweep finds nothing). Summary rows stand in for recordings here, their ``method`` for
    the file's name."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import FileSystemStorage

    storage = FileSystemStorage(location=tmp_path)
    calls = []

    def summary_delete(summary):  # as recording_delete(recording) will
        calls.append(summary.pk)
        storage.delete(summary.method)
        summary.delete()

    kind = retention.rows_kind(
        "files", model=SessionSummary, windows=(retention.RECORDINGS,), delete_each=summary_delete
    )
    monkeypatch.setattr(retention, "_kinds", {"files": kind})
    set_windows(world.tenant_a, retention_recording_days=7)
    old = make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=8)
    recent = make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=6)
    for session in (old, recent):
        name = storage.save(f"recording-{session.pk}.ogg", ContentFile(b"OggS"))
        with tenant_scope(world.tenant_a):
            SessionSummary.objects.create(tenant=world.tenant_a, session=session, method=name)
    retention.retention_sweep()
    retention.retention_sweep()
    assert not storage.exists(f"recording-{old.pk}.ogg")
    assert storage.exists(f"recording-{recent.pk}.ogg")
    assert len(calls) == 1
    [entry] = audit_of(world.tenant_a, "retention.swept")
    assert entry.changes["deleted"]["files"]["deleted"] == 1
    report = retention.erasure_run(
        plan=retention.erasure_plan(tenant=world.tenant_a, session_id=recent.pk), actor=None
    )
    assert report.deleted == {"files": 1} and not storage.exists(f"recording-{recent.pk}.ogg")


def test_a_kind_of_blanked_json_fields(world, agents_ab, monkeypatch):
    """As webhook deliveries' payloads will: the rows stay, their content fields are emptied,
    each counted once. (Transcript rows stand in, ``data`` for the payload.)"""
    kind = retention.fields_kind(
        "payloads", model=TranscriptItem, windows=(retention.TRANSCRIPTS, retention.ANALYSIS),
        blank={"data": {}, "text": ""},
    )  # fmt: skip
    monkeypatch.setattr(retention, "_kinds", {"payloads": kind})
    # The shorter of the two windows applies.
    set_windows(world.tenant_a, retention_transcript_days=30, retention_analysis_days=5)
    session = make_session(world.tenant_a, agents_ab[world.tenant_a.pk], ended_days_ago=6)
    with tenant_scope(world.tenant_a):
        for number, data in enumerate([{"transcript": SAID}, {}]):
            TranscriptItem.objects.create(
                tenant=world.tenant_a, session=session, sequence=number,
                upstream_item_id=f"p{number}", role="tool", text=SAID, data=data,
            )  # fmt: skip
    retention.retention_sweep()
    with tenant_scope(world.tenant_a):
        rows = list(TranscriptItem.objects.order_by("sequence").values_list("text", "data"))
    assert rows == [("", {}), ("", {})]
    [entry] = audit_of(world.tenant_a, "retention.swept")
    counted = entry.changes["deleted"]["payloads"]
    assert (counted["deleted"], counted["window_days"]) == (2, 5)
