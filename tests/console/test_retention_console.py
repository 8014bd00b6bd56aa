"""The console's data retention page, end-user erasure and session erasure, by role."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from agents import retention
from agents.configuration import agent_create
from agents.models import Session, TranscriptItem
from agents.services import end_user_hash
from tenants.models import AuditEvent, Tenant
from tenants.scoping import tenant_scope
from tests.console.test_console_pages import user_with_role

ROLES = ["owner", "admin", "finance", "viewer"]
CONFIGURERS = {"owner", "admin"}


@pytest.fixture
def alice(world):
    """Two ended sessions of end user "alice" in tenant A, one of "bob", each with a line."""
    agent = agent_create(
        tenant=world.tenant_a, actor=world.owner_a, fields={"name": "Support", "provider": "local"}
    )
    sessions = {}
    with tenant_scope(world.tenant_a):
        for name, end_user in (("alice1", "alice"), ("alice2", "alice"), ("bob", "bob")):
            session = Session.objects.create(
                tenant=world.tenant_a, agent=agent, channel="widget", model="gpt-realtime-2",
                end_user_hash=end_user_hash(tenant_id=world.tenant_a.pk, end_user=end_user),
            )  # fmt: skip
            Session.objects.filter(pk=session.pk).update(
                ended_at=timezone.now() - timedelta(hours=1), end_reason="client_closed"
            )
            TranscriptItem.objects.create(
                tenant=world.tenant_a, session=session, sequence=0, upstream_item_id="i0",
                role="user", text=f"secret words of {name}",
            )  # fmt: skip
            sessions[name] = session
    return sessions


def lines(session) -> int:
    with tenant_scope(session.tenant_id):
        return TranscriptItem.objects.filter(session=session).count()


def windows(tenant) -> tuple:
    tenant = Tenant.objects.get(pk=tenant.pk)
    return (
        tenant.retention_transcript_days,
        tenant.retention_recording_days,
        tenant.retention_analysis_days,
    )


def audit_actions(tenant) -> list[str]:
    with tenant_scope(tenant):
        return list(AuditEvent.objects.order_by("pk").values_list("action", flat=True))


@pytest.mark.parametrize("role", ROLES)
def test_data_page_for_every_role_and_only_configurers_change_it(client, world, role):
    client.force_login(user_with_role(world, role))
    url = reverse("data-retention", args=["tenant-a"])
    page = client.get(url)
    assert page.status_code == 200
    assert (b'id="retention-form"' in page.content) == (role in CONFIGURERS)
    assert (b'id="erasure-form"' in page.content) == (role in CONFIGURERS)
    response = client.post(url, {"retention_transcript_days": "30"})
    if role in CONFIGURERS:
        assert response.status_code == 302
        assert windows(world.tenant_a) == (30, None, None)
    else:
        assert response.status_code == 403
        assert windows(world.tenant_a) == (None, None, None)


def test_retention_form_saves_audits_and_refuses_bad_values(client, world):
    client.force_login(world.owner_a)
    url = reverse("data-retention", args=["tenant-a"])
    for bad, message in (
        ("0", "at least 1 day"), ("-3", "at least 1 day"), ("36501", "at most 36500 days"),
        ("abc", "Enter whole days."), ("1.5", "Enter whole days."),
    ):  # fmt: skip
        response = client.post(url, {"retention_recording_days": bad})
        assert response.status_code == 200
        assert message in response.content.decode(), bad
    assert windows(world.tenant_a) == (None, None, None)
    assert "tenant.retention_changed" not in audit_actions(world.tenant_a)

    client.post(url, {"retention_transcript_days": "90", "retention_recording_days": "7",
                      "retention_analysis_days": ""})  # fmt: skip
    assert windows(world.tenant_a) == (90, 7, None)
    with tenant_scope(world.tenant_a):
        entry = AuditEvent.objects.get(action="tenant.retention_changed")
    assert entry.actor == world.owner_a
    assert entry.changes == {
        "retention_transcript_days": {"from": None, "to": 90},
        "retention_recording_days": {"from": None, "to": 7},
    }
    page = client.get(url).content.decode()
    assert 'value="90"' in page and 'value="7"' in page
    client.post(url, {"retention_transcript_days": "", "retention_recording_days": "7"})
    assert windows(world.tenant_a) == (None, 7, None)  # empty: forever again


@pytest.mark.parametrize("role", ["finance", "viewer"])
def test_members_who_do_not_configure_cannot_erase(client, world, alice, role):
    client.force_login(user_with_role(world, role))
    confirm = reverse("erasure-confirm", args=["tenant-a"])
    erase_session = reverse("session-erase", args=["tenant-a", alice["alice1"].pk])
    assert client.post(confirm, {"end_user": "alice", "confirm": "erase"}).status_code == 403
    assert client.get(erase_session).status_code == 403
    assert client.post(erase_session).status_code == 403
    assert [lines(session) for session in alice.values()] == [1, 1, 1]
    assert not any(action.startswith("erasure") for action in audit_actions(world.tenant_a))
    page = client.get(reverse("session-detail", args=["tenant-a", alice["alice1"].pk]))
    assert b'id="session-erase"' not in page.content and b'id="end-user-erase"' not in page.content


@pytest.mark.parametrize("role", sorted(CONFIGURERS))
def test_erase_an_end_user_after_a_confirmation(client, world, alice, role):
    client.force_login(user_with_role(world, role))
    confirm = reverse("erasure-confirm", args=["tenant-a"])
    page = client.post(confirm, {"end_user": "alice"})
    assert page.status_code == 200
    content = page.content.decode()
    assert "<strong>2</strong> sessions will be erased" in content
    assert "alice" not in content  # the confirmation carries the hash, not the raw id
    hashed = end_user_hash(tenant_id=world.tenant_a.pk, end_user="alice")
    assert f'name="end_user_hash" value="{hashed}"' in content
    assert [lines(session) for session in alice.values()] == [1, 1, 1]  # nothing yet

    response = client.post(confirm, {"end_user_hash": hashed, "confirm": "erase"}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("data-retention", args=["tenant-a"])
    assert "Erased 2 sessions (transcripts 2, summaries 0" in response.content.decode()
    assert [lines(session) for session in alice.values()] == [0, 0, 1]
    assert audit_actions(world.tenant_a).count("erasure.end_user") == 1


def test_erasure_form_errors(client, world, alice):
    client.force_login(world.owner_a)
    confirm = reverse("erasure-confirm", args=["tenant-a"])
    for form, message in (
        ({}, "Give either the end user id or the end-user hash."),
        ({"end_user": "alice", "end_user_hash": "a" * 32}, "Give either"),
        ({"end_user_hash": "not-a-hash"}, "32 hexadecimal digits"),
    ):
        response = client.post(confirm, {**form, "confirm": "erase"})
        assert response.status_code == 400
        assert message in response.content.decode()
    assert [lines(session) for session in alice.values()] == [1, 1, 1]


def test_the_session_page_erases_one_session_and_its_end_user(client, world, alice):
    client.force_login(world.owner_a)
    session = alice["alice1"]
    detail = reverse("session-detail", args=["tenant-a", session.pk])
    page = client.get(detail).content.decode()
    assert 'id="session-erase"' in page and 'id="end-user-erase"' in page
    erase = reverse("session-erase", args=["tenant-a", session.pk])
    confirmation = client.get(erase).content.decode()
    assert "<strong>1</strong> session will be erased (transcripts 1, summaries 0" in confirmation
    assert lines(session) == 1
    response = client.post(erase, follow=True)
    assert response.redirect_chain[-1][0] == detail
    content = response.content.decode()
    assert 'id="end-user-erased"' in content and "secret words of alice1" not in content
    assert [lines(s) for s in alice.values()] == [0, 1, 1]
    # The hash on the page of alice's other session leads to erasing the rest of her.
    hashed = end_user_hash(tenant_id=world.tenant_a.pk, end_user="alice")
    page = client.post(reverse("erasure-confirm", args=["tenant-a"]), {"end_user_hash": hashed})
    assert "<strong>1</strong> session will be erased" in page.content.decode()


def test_a_running_session_is_not_erased(client, world, alice):
    session = alice["bob"]
    with tenant_scope(world.tenant_a):
        Session.objects.filter(pk=session.pk).update(ended_at=None, end_reason="")
    client.force_login(world.owner_a)
    erase = reverse("session-erase", args=["tenant-a", session.pk])
    page = client.get(erase).content.decode()
    assert "<strong>0</strong> sessions will be erased" in page and 'id="erasure-waiting"' in page
    assert 'id="erase-confirm"' not in page
    assert client.post(erase).status_code == 200
    assert lines(session) == 1
    assert retention.ERASED not in audit_actions(world.tenant_a)
