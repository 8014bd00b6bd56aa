"""The tenant's data policy: the rule (agents/privacy.py), its console page, compaction."""

import pytest
from django.urls import reverse

from agents import privacy
from agents.compaction import session_seed_stored, summary_refresh
from agents.configuration import agent_create
from agents.models import Session, SessionSegment, SessionSummary, TranscriptItem
from agents.services import session_add_upstream, session_end_record
from tenants import services
from tenants.models import AuditEvent, Role, Tenant
from tenants.scoping import scopes_disabled, tenant_scope

CARD = "4111 1111 1111 1111"
EMAIL = "john dot smith at example dot com"


def test_the_policy_functions():
    text = f"card {CARD}, mail {EMAIL}"
    assert privacy.content_for_storage("keep", text) == text
    assert privacy.content_for_storage("redact", text) == "card [card_number], mail [email]"
    assert privacy.content_for_storage("metadata", text) == ""
    assert privacy.content_while_live("metadata", text) == "card [card_number], mail [email]"
    value = {"to": "a@example.com", "count": 2, "ok": True, "tags": ["x"]}
    assert privacy.value_for_storage("keep", value) is value
    assert privacy.value_for_storage("redact", value) == {**value, "to": "[email]"}
    assert privacy.value_for_storage("metadata", value) == {
        "to": "", "count": 2, "ok": True, "tags": [""]
    }  # fmt: skip
    assert privacy.keeps_content("redact") and not privacy.keeps_content("metadata")
    with pytest.raises(ValueError, match="unknown data policy"):
        privacy.content_for_storage("forget", text)


def test_items_sent_under_metadata_keep_tool_names_not_content():
    call = {"name": "lookup", "call_id": "c1", "arguments": '{"email": "a@example.com"}'}
    assert privacy.transcript_item_for_sending(
        "metadata", kind="function_call", text="lookup", data=call
    ) == ("lookup", {"name": "lookup", "call_id": "c1"})
    assert privacy.transcript_item_for_sending(
        "metadata", kind="message", text="[email]", data={"status": "completed"}
    ) == ("", {"status": "completed"})
    assert privacy.transcript_item_for_sending("redact", kind="message", text="x", data={}) == (
        "x", {}
    )  # fmt: skip


@pytest.fixture
def conversation(world, settings):
    settings.OPENAI_API_KEY = ""  # the local summarizer
    agent = agent_create(
        tenant=world.tenant_a, actor=world.owner_a,
        fields={"name": "Support", "provider": "local", "instructions": "Help."},
    )  # fmt: skip
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(
            tenant=world.tenant_a, agent=agent, agent_version=agent.live_version,
            channel="api", model="gpt-realtime-2",
        )  # fmt: skip
        # Stored as said (the policy was "keep" when these came, or the recorder is not the
        # writer): compaction redacts what it stores whatever it reads.
        for sequence, (role, text) in enumerate(
            [("user", f"My card is {CARD}."), ("assistant", "Thanks."),
             ("user", f"Mail me at {EMAIL}."), ("assistant", "Will do.")]
        ):  # fmt: skip
            TranscriptItem.objects.create(
                tenant=world.tenant_a, session=session, sequence=sequence,
                upstream_item_id=f"i{sequence}", role=role, text=text,
            )  # fmt: skip
        TranscriptItem.objects.create(
            tenant=world.tenant_a, session=session, sequence=4, upstream_item_id="i4",
            role="assistant", kind="function_call", text="lookup",
            data={"name": "lookup", "call_id": "c", "arguments": '{"card": "4111111111111111"}'},
        )  # fmt: skip
    return world.tenant_a, session


def set_policy(tenant, policy):
    Tenant.objects.filter(pk=tenant.pk).update(data_policy=policy)


def test_compaction_stores_redacted_summaries_under_redact(conversation):
    tenant, session = conversation
    set_policy(tenant, "redact")
    summary = summary_refresh(session_id=session.pk, tenant_id=tenant.pk)
    lines = summary.text.splitlines()
    assert "User: My card is [card_number]." in lines
    assert not any(CARD in value or "john" in value for value in (summary.text, summary.output))
    assert CARD not in summary.output and "john" not in summary.output
    seed = session_seed_stored(session_id=session.pk, tenant_id=tenant.pk)
    assert seed.summary == summary.text


def test_compaction_keeps_content_under_keep(conversation):
    tenant, session = conversation
    summary = summary_refresh(session_id=session.pk, tenant_id=tenant.pk)
    assert f"User: My card is {CARD}." in summary.text.splitlines()


def test_metadata_discards_content_when_the_session_ends(
    conversation, django_capture_on_commit_callbacks
):
    tenant, session = conversation
    set_policy(tenant, "metadata")
    summary_refresh(session_id=session.pk, tenant_id=tenant.pk)
    session_add_upstream(
        session_id=session.pk, tenant_id=tenant.pk, upstream_session_id="up_2",
        reason="max_duration", seed_summary="User: My card is [card_number].",
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        session_end_record(
            session_id=session.pk, tenant_id=tenant.pk, reason="client_closed",
            audio_in_ms=0, audio_out_ms=0,
        )  # fmt: skip
    with tenant_scope(tenant):
        items = list(
            TranscriptItem.objects.order_by("sequence").values("role", "kind", "text", "data")
        )
        summary = SessionSummary.objects.get(session=session)
        segment = SessionSegment.objects.get(session=session)
    assert [(i["role"], i["kind"], i["text"]) for i in items] == [
        ("user", "message", ""), ("assistant", "message", ""), ("user", "message", ""),
        ("assistant", "message", ""), ("assistant", "function_call", "lookup"),
    ]  # fmt: skip
    assert items[4]["data"] == {"name": "lookup", "call_id": "c"}
    assert (summary.text, summary.prompt, summary.output) == ("", "", "")
    assert summary.through_sequence == 4  # what was summarised is still known
    assert segment.seed_summary == ""
    # A refresh landing after the end stores no content either.
    with tenant_scope(tenant):
        TranscriptItem.objects.create(
            tenant=tenant, session=session, sequence=5, upstream_item_id="i5", role="user",
            text="late [email]",
        )  # fmt: skip
    assert summary_refresh(session_id=session.pk, tenant_id=tenant.pk).text == ""


def test_keep_and_redact_leave_the_content_when_the_session_ends(
    conversation, django_capture_on_commit_callbacks
):
    tenant, session = conversation
    set_policy(tenant, "redact")
    with django_capture_on_commit_callbacks(execute=True):
        session_end_record(
            session_id=session.pk, tenant_id=tenant.pk, reason="client_closed",
            audio_in_ms=0, audio_out_ms=0,
        )  # fmt: skip
    with tenant_scope(tenant):
        assert TranscriptItem.objects.get(sequence=0).text == f"My card is {CARD}."


# --- the console page ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owners_and_admins_set_the_policy_and_it_is_audited(client, world, role):
    user = world.owner_a
    if role != "owner":
        user = services.user_get_or_create(email="admin-a@example.com", password=world.password)
        services.membership_set(tenant=world.tenant_a, user=user, role=Role.ADMIN)
    client.force_login(user)
    url = reverse("data-policy", args=["tenant-a"])
    page = client.get(url)
    assert page.status_code == 200 and b"Keep metadata only" in page.content
    assert client.post(url, {"data_policy": "redact"}).status_code == 302
    world.tenant_a.refresh_from_db()
    assert world.tenant_a.data_policy == "redact"
    with tenant_scope(world.tenant_a):
        event = AuditEvent.objects.get(action="tenant.data_policy_changed")
    assert event.changes == {"data_policy": ["keep", "redact"]} and event.actor == user
    # The same again changes nothing and records nothing.
    client.post(url, {"data_policy": "redact"})
    with tenant_scope(world.tenant_a):
        assert AuditEvent.objects.filter(action="tenant.data_policy_changed").count() == 1


def test_the_tenant_wide_recording_policy_is_set_on_the_same_page_and_audited(client, world):
    client.force_login(world.owner_a)
    url = reverse("data-policy", args=["tenant-a"])
    assert b"Never record" in client.get(url).content
    response = client.post(url, {"data_policy": "keep", "recording_policy": "never"})
    assert response.status_code == 302
    world.tenant_a.refresh_from_db()
    assert (world.tenant_a.data_policy, world.tenant_a.recording_policy) == ("keep", "never")
    with tenant_scope(world.tenant_a):
        event = AuditEvent.objects.get(action="tenant.recording_policy_changed")
        assert not AuditEvent.objects.filter(action="tenant.data_policy_changed").exists()
    assert event.changes == {"recording_policy": ["per_agent", "never"]}
    response = client.post(url, {"data_policy": "keep", "recording_policy": "sometimes"})
    assert response.status_code == 200 and b"Select a valid choice" in response.content


def test_a_bad_choice_is_a_form_error(client, world):
    client.force_login(world.owner_a)
    response = client.post(reverse("data-policy", args=["tenant-a"]), {"data_policy": "forget"})
    assert response.status_code == 200
    assert b"Select a valid choice" in response.content
    world.tenant_a.refresh_from_db()
    assert world.tenant_a.data_policy == "keep"


def test_viewers_read_and_outsiders_get_404(client, world):
    client.force_login(world.member_a)  # a viewer of A
    url = reverse("data-policy", args=["tenant-a"])
    page = client.get(url)
    assert page.status_code == 200 and b"Keep everything" in page.content
    assert b"<form" not in page.content.split(b"<h1>Data policy")[1]
    assert client.post(url, {"data_policy": "metadata"}).status_code == 403
    client.force_login(world.owner_b)
    assert client.get(url).status_code == 404
    assert client.post(url, {"data_policy": "metadata"}).status_code == 404
    with scopes_disabled():
        assert Tenant.objects.get(pk=world.tenant_a.pk).data_policy == "keep"
        assert not AuditEvent.objects.filter(action="tenant.data_policy_changed").exists()


def test_the_recorder_redacts_tool_calls_and_shows_metadata_only_live():
    from agents.realtime.relay.contracts import TranscriptRecord
    from agents.recording import _live_item, _record_for_storage

    call = TranscriptRecord(
        item_id="i", sequence=3, role="assistant", kind="function_call", text="lookup",
        data={"name": "lookup", "call_id": "c", "arguments": '{"email": "a@example.com"}'},
    )  # fmt: skip
    output = TranscriptRecord(
        item_id="o", sequence=4, role="tool", kind="function_call_output",
        text='{"card": "4111 1111 1111 1111"}', data={"call_id": "c"},
    )  # fmt: skip
    assert _record_for_storage(call, "keep") == call
    stored_call = _record_for_storage(call, "redact")
    assert stored_call.data["arguments"] == '{"email": "[email]"}'
    stored_output = _record_for_storage(output, "metadata")
    assert stored_output.text == '{"card": "[card_number]"}'  # while the session lives
    assert _live_item(stored_call, "redact")["data"]["arguments"] == '{"email": "[email]"}'
    assert _live_item(stored_call, "metadata") == {
        "item_id": "i", "sequence": 3, "role": "assistant", "kind": "function_call",
        "text": "lookup", "data": {"name": "lookup", "call_id": "c"},
    }  # fmt: skip
    assert _live_item(stored_output, "metadata")["text"] == ""
