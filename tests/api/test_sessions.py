"""Sessions over the REST API: filters, cursor pages, transcript, recording link, analysis."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlparse

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone

from agents.models import Recording, Session, SessionAnalysis, TranscriptItem
from agents.recordings import recording_storage
from tenants.scoping import tenant_scope
from tests.api.conftest import error_of

pytestmark = pytest.mark.django_db


def make_session(tenant, agent, **fields) -> Session:
    started_at = fields.pop("started_at", None)
    with tenant_scope(tenant):
        session = Session.objects.create(
            tenant=tenant, agent=agent, agent_version=agent.live_version,
            model=agent.model, channel=fields.pop("channel", "api"), **fields,
        )  # fmt: skip
        if started_at is not None:
            Session.objects.filter(pk=session.pk).update(started_at=started_at)
            session.refresh_from_db()
    return session


@pytest.fixture
def sessions_a(world, agent_a):
    now = timezone.now()
    return [
        make_session(world.tenant_a, agent_a, channel="widget", started_at=now - timedelta(days=3),
                     ended_at=now - timedelta(days=3) + timedelta(seconds=90),
                     end_reason="client_closed"),
        make_session(world.tenant_a, agent_a, channel="phone", started_at=now - timedelta(days=2),
                     ended_at=now - timedelta(days=2) + timedelta(seconds=30),
                     end_reason="max_duration"),
        make_session(world.tenant_a, agent_a, channel="api", started_at=now - timedelta(hours=1)),
    ]  # fmt: skip


def ids(answer) -> list[int]:
    return [row["id"] for row in answer.body["data"]]


def test_list_filters(api_a, sessions_a, agent_a):
    widget, phone, live = sessions_a
    assert ids(api_a.get("/api/v1/sessions")) == [live.pk, phone.pk, widget.pk]
    assert ids(api_a.get("/api/v1/sessions", query={"channel": "phone"})) == [phone.pk]
    assert ids(api_a.get("/api/v1/sessions", query={"ended": "false"})) == [live.pk]
    assert ids(api_a.get("/api/v1/sessions", query={"ended": "true"})) == [phone.pk, widget.pk]
    assert ids(api_a.get("/api/v1/sessions", query={"end_reason": "max_duration"})) == [phone.pk]
    assert ids(api_a.get("/api/v1/sessions", query={"agent": agent_a.pk})) == [
        live.pk, phone.pk, widget.pk,
    ]  # fmt: skip
    assert ids(api_a.get("/api/v1/sessions", query={"agent": agent_a.pk + 1000})) == []
    since = (timezone.now() - timedelta(days=2, hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ")
    until = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ids(api_a.get("/api/v1/sessions", query={"since": since})) == [live.pk, phone.pk]
    assert ids(api_a.get("/api/v1/sessions", query={"since": since, "until": until})) == [phone.pk]
    row = api_a.get(f"/api/v1/sessions/{widget.pk}").body
    assert (row["channel"], row["end_reason"], row["duration_seconds"]) == (
        "widget", "client_closed", 90.0,
    )  # fmt: skip
    assert row["agent"] == agent_a.pk and row["agent_version"] == 1


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"channel": "fax"}, "channel"),
        ({"end_reason": "boredom"}, "end_reason"),
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"agent": "one"}, "agent"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(api_a, query, param):
    answer = api_a.get("/api/v1/sessions", query=query)
    assert answer.status == 400
    assert error_of(answer)["param"] == param


def test_cursor_pagination_walks_every_session_once(api_a, world, agent_a):
    made = [make_session(world.tenant_a, agent_a).pk for _ in range(7)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        query = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api_a.get("/api/v1/sessions", query=query).body
        pages += 1
        seen += [row["id"] for row in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert pages == 3
    assert seen == sorted(made, reverse=True)


def test_transcript_in_order(api_a, world, agent_a):
    session = make_session(world.tenant_a, agent_a)
    with tenant_scope(world.tenant_a):
        for sequence, (role, text) in enumerate([("user", "Hi"), ("assistant", "Hello!")]):
            TranscriptItem.objects.create(
                tenant=world.tenant_a, session=session, sequence=sequence,
                upstream_item_id=f"item_{sequence}", role=role, text=text,
            )  # fmt: skip
    answer = api_a.get(f"/api/v1/sessions/{session.pk}/transcript")
    assert answer.status == 200
    assert [(i["sequence"], i["role"], i["text"]) for i in answer.body["data"]] == [
        (0, "user", "Hi"), (1, "assistant", "Hello!"),
    ]  # fmt: skip


def test_recording_metadata_and_a_signed_link_that_downloads(api_a, world, agent_a, settings):
    settings.VP_PUBLIC_URL = "http://testserver"
    session = make_session(world.tenant_a, agent_a)
    missing = api_a.get(f"/api/v1/sessions/{session.pk}/recording")
    assert (missing.status, error_of(missing)["code"]) == (404, "recording_not_found")
    storage = recording_storage()
    audio = b"OggS" + bytes(range(256))
    name = storage.save(f"{world.tenant_a.pk}/{session.pk}.ogg", ContentFile(audio))
    with tenant_scope(world.tenant_a):
        Recording.objects.create(
            tenant=world.tenant_a, session=session, file_name=name, format="audio/ogg",
            duration_ms=1500, bytes=len(audio), status="ready", ready_at=timezone.now(),
        )  # fmt: skip
    answer = api_a.get(f"/api/v1/sessions/{session.pk}/recording")
    assert answer.status == 200
    body = answer.body
    assert (body["status"], body["duration_ms"], body["bytes"]) == ("ready", 1500, len(audio))
    assert body["download_url_expires_in"] == settings.VP_RECORDING_LINK_SECONDS
    downloaded = Client().get(urlparse(body["download_url"]).path)
    assert downloaded.status_code == 200
    assert b"".join(downloaded.streaming_content) == audio


def test_analysis(api_a, world, agent_a):
    session = make_session(world.tenant_a, agent_a)
    missing = api_a.get(f"/api/v1/sessions/{session.pk}/analysis")
    assert (missing.status, error_of(missing)["code"]) == (404, "analysis_not_found")
    with tenant_scope(world.tenant_a):
        SessionAnalysis.objects.create(
            tenant=world.tenant_a, session=session, status="done", method="local",
            summary="Asked about an order.", success="passed", data={"order_id": "A1"},
            requested_at=timezone.now(), completed_at=timezone.now(),
        )  # fmt: skip
    body = api_a.get(f"/api/v1/sessions/{session.pk}/analysis").body
    assert (body["status"], body["summary"], body["success"], body["data"]) == (
        "done", "Asked about an order.", "passed", {"order_id": "A1"},
    )  # fmt: skip


def test_another_tenants_sessions_are_404_and_not_listed(api_a, world, agent_b):
    theirs = make_session(world.tenant_b, agent_b)
    with tenant_scope(world.tenant_b):
        TranscriptItem.objects.create(
            tenant=world.tenant_b, session=theirs, sequence=0, upstream_item_id="i",
            role="user", text="secret",
        )  # fmt: skip
    for suffix in ("", "/transcript", "/recording", "/analysis"):
        answer = api_a.get(f"/api/v1/sessions/{theirs.pk}{suffix}")
        assert (answer.status, error_of(answer)["code"]) == (404, "session_not_found")
        assert b"secret" not in answer.content
    assert api_a.get("/api/v1/sessions").body["data"] == []
    assert api_a.get("/api/v1/sessions", query={"agent": agent_b.pk}).body["data"] == []


def test_a_bare_number_is_not_a_date(api_a):
    answer = api_a.get("/api/v1/sessions", query={"until": "0.5"})
    assert (answer.status, error_of(answer)["param"]) == (400, "until")
