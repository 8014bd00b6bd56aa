"""Long conversations end to end on the local engine, and the rolling summary."""

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connection

from agents.compaction import session_seed, summary_refresh
from agents.configuration import agent_create
from agents.models import Session, SessionSegment, SessionSummary, TranscriptItem
from agents.summarizer import Turn, summarize_locally
from billing.models import UsageEvent
from tenants import services
from tenants.scoping import scopes_disabled, tenant_scope
from voiceplatform.asgi import application

FACTS = [
    "Hello, my name is Alice Moreau.",
    "My order number is 4821 and it was placed on March 3.",
    "Please deliver it to 12 Rose Street before Friday.",
]


def test_local_summary_keeps_names_numbers_dates_and_requests():
    turns = [
        Turn("user", "Hi there. " + FACTS[0]),
        Turn("assistant", "Hello Alice, how can I help?"),
        Turn("user", "Nice weather. " + FACTS[1]),
        Turn("user", FACTS[2] + " Thanks a lot."),
    ]
    summary = summarize_locally("", turns)
    assert summary.splitlines() == [
        "User: Hello, my name is Alice Moreau.",
        "Assistant: Hello Alice, how can I help?",
        "User: My order number is 4821 and it was placed on March 3.",
        "User: Please deliver it to 12 Rose Street before Friday.",
    ]
    # Folding the same turns again adds nothing; new facts are appended.
    again = summarize_locally(summary, turns + [Turn("user", "Also cancel order 77.")])
    assert again.splitlines()[:4] == summary.splitlines()
    assert again.splitlines()[-1] == "User: Also cancel order 77."


def test_local_summary_stays_within_budget_and_keeps_the_name():
    turns = [Turn("user", "My name is Bob.")] + [
        Turn("user", f"Item {n} costs {n * 3} dollars.") for n in range(300)
    ]
    summary = summarize_locally("", turns)
    assert len(summary) <= 2000
    assert summary.splitlines()[0] == "User: My name is Bob."
    assert summary.splitlines()[-1] == "User: Item 299 costs 897 dollars."


@pytest.fixture
def agent_and_key(db, settings):
    settings.OPENAI_API_KEY = ""
    owner = services.user_get_or_create(email="o@example.com", password="pw-123456789")
    tenant = services.tenant_create(slug="acme", name="Acme", owner=owner)
    agent = agent_create(
        tenant=tenant,
        actor=owner,
        fields={"name": "Support", "provider": "local", "turn_detection": "none",
                "instructions": "Help with orders."},
    )  # fmt: skip
    _, raw_key = services.api_key_issue(tenant=tenant, name="b", default_agent=agent)
    return tenant, agent, raw_key


def user_text(text):
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


async def receive_until(communicator, event_type, seen, timeout=20):
    while True:
        event = json.loads(await communicator.receive_from(timeout=timeout))
        seen.append(event)
        if event["type"] == event_type:
            return event


async def segments_stored(tenant, count, timeout=20):
    def stored():
        with tenant_scope(tenant):
            return SessionSegment.objects.count()

    async with asyncio.timeout(timeout):
        while await database_sync_to_async(stored)() < count:
            await asyncio.sleep(0.05)


@pytest.mark.django_db(transaction=True)
async def test_a_conversation_across_three_upstream_sessions(agent_and_key, settings):
    tenant, agent, raw_key = agent_and_key
    settings.VP_SESSION_ROTATE_SECONDS = 1.0
    communicator = WebsocketCommunicator(
        application, "/v1/realtime?model=gpt-realtime-2",
        headers=[(b"authorization", f"Bearer {raw_key}".encode())],
    )  # fmt: skip
    connected, _ = await communicator.connect()
    assert connected
    seen: list[dict] = []
    try:
        await receive_until(communicator, "session.created", seen)
        for index, fact in enumerate(FACTS):
            await communicator.send_json_to(
                {"type": "conversation.item.create", "item": user_text(fact)}
            )
            await communicator.send_json_to({"type": "response.create"})
            await receive_until(communicator, "response.done", seen)
            if index < len(FACTS) - 1:
                # The rotation comes at the quiet moment after the answer, unseen by the
                # client (its session goes on); the new segment is recorded.
                await segments_stored(tenant, index + 2)
        assert all(event["type"] != "error" for event in seen)
    finally:
        await communicator.disconnect()

    def stored():
        with tenant_scope(tenant):
            session = Session.objects.get()
            return (
                session,
                list(
                    SessionSegment.objects.order_by("index").values_list("reason", "seed_summary")
                ),
                list(
                    TranscriptItem.objects.order_by("sequence").values_list(
                        "sequence", "role", "text"
                    )
                ),
                sorted(UsageEvent.objects.values_list("upstream_response_id", flat=True)),
            )

    session, segments, items, usage = await database_sync_to_async(stored)()
    assert [reason for reason, _ in segments] == ["initial", "max_duration", "max_duration"]
    assert len(session.upstream_session_ids) == 3
    assert "Alice Moreau" in segments[1][1] and "4821" in segments[2][1]
    assert "March 3" in segments[2][1]
    # The transcript is continuous and in order across the segments; nothing replayed twice.
    assert [(role, text) for _, role, text in items] == [
        ("user", FACTS[0]), ("assistant", f"You said: {FACTS[0]}"),
        ("user", FACTS[1]), ("assistant", f"You said: {FACTS[1]}"),
        ("user", FACTS[2]), ("assistant", f"You said: {FACTS[2]}"),
    ]  # fmt: skip
    assert [sequence for sequence, _, _ in items] == sorted(sequence for sequence, _, _ in items)
    # Usage exactly once per response the client saw.
    done = sorted(event["response"]["id"] for event in seen if event["type"] == "response.done")
    assert usage == done and len(done) == 3
    assert session.end_reason == "client_closed"


def make_session_with_items(tenant, agent, texts):
    with tenant_scope(tenant):
        session = Session.objects.create(tenant=tenant, agent=agent, channel="api", model="m")
        for index, (role, text) in enumerate(texts):
            TranscriptItem.objects.create(
                tenant=tenant, session=session, sequence=index, upstream_item_id=f"i{index}",
                role=role, text=text,
            )  # fmt: skip
    return session


@pytest.mark.django_db
def test_summary_refresh_is_idempotent_and_seed_has_the_last_turns(agent_and_key):
    tenant, agent, _ = agent_and_key
    texts = [("user", FACTS[0]), ("assistant", "Hello Alice."), ("user", FACTS[1])]
    session = make_session_with_items(tenant, agent, texts)
    first = summary_refresh(session_id=session.pk, tenant_id=tenant.pk)
    assert (first.revision, first.through_sequence, first.method) == (1, 2, "local")
    assert "4821" in first.text and "Alice Moreau" in first.text
    again = summary_refresh(session_id=session.pk, tenant_id=tenant.pk)
    assert (again.revision, again.text) == (1, first.text)
    seed = session_seed(session_id=session.pk, tenant_id=tenant.pk)
    assert seed.summary == first.text
    assert [(turn.role, turn.text) for turn in seed.turns] == texts


@pytest.mark.django_db(transaction=True)
def test_summary_task_run_twice_concurrently_leaves_one_summary(agent_and_key):
    from agents.tasks import session_summarize

    tenant, agent, _ = agent_and_key
    session = make_session_with_items(tenant, agent, [("user", fact) for fact in FACTS])
    errors = []
    barrier = threading.Barrier(2)

    def run():
        try:
            barrier.wait()
            session_summarize(session.pk, tenant.pk)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    with scopes_disabled():
        summaries = list(SessionSummary.objects.all())
    assert len(summaries) == 1
    assert summaries[0].revision == 1
    assert summaries[0].through_sequence == 2


class FakeResponsesApi(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeResponsesApi.requests.append((self.path, self.headers.get("Authorization"), body))
        reply = {
            "id": "resp_sum_1", "object": "response", "created_at": 0, "status": "completed",
            "model": body["model"], "output": [{
                "id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "annotations": [],
                             "text": "User: Alice Moreau, order 4821 placed March 3."}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
        }  # fmt: skip
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.mark.django_db
def test_openai_summarizer_against_a_fake_responses_api(agent_and_key, settings):
    tenant, agent, _ = agent_and_key
    services.provider_credential_set(tenant=tenant, secret="sk-tenant-" + "s" * 30)
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeResponsesApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.VP_OPENAI_API_BASE = f"http://127.0.0.1:{server.server_address[1]}/v1"
    settings.VP_SUMMARY_MODEL = "gpt-test-mini"
    FakeResponsesApi.requests = []
    try:
        session = make_session_with_items(tenant, agent, [("user", FACTS[0]), ("user", FACTS[1])])
        summary = summary_refresh(session_id=session.pk, tenant_id=tenant.pk)
    finally:
        server.shutdown()
    assert (summary.method, summary.model) == ("openai", "gpt-test-mini")
    assert summary.text == "User: Alice Moreau, order 4821 placed March 3."
    assert summary.output == summary.text
    assert FACTS[1] in summary.prompt
    path, authorization, body = FakeResponsesApi.requests[0]
    assert path == "/v1/responses"
    assert authorization == "Bearer sk-tenant-" + "s" * 30
    assert body["model"] == "gpt-test-mini" and FACTS[0] in body["input"]


@pytest.mark.django_db
def test_openai_summarizer_failure_falls_back_to_local(agent_and_key, settings):
    tenant, agent, _ = agent_and_key
    settings.OPENAI_API_KEY = "sk-platform-" + "p" * 30
    settings.VP_OPENAI_API_BASE = "http://127.0.0.1:9/v1"  # nothing listens there
    session = make_session_with_items(tenant, agent, [("user", FACTS[1])])
    summary = summary_refresh(session_id=session.pk, tenant_id=tenant.pk)
    assert summary.method == "local"
    assert summary.text == "User: My order number is 4821 and it was placed on March 3."


@pytest.mark.django_db(transaction=True)
async def test_a_rotation_never_waits_on_a_slow_summarizer(agent_and_key, monkeypatch):
    """The seed comes within its budget from the stored summary plus the turns it does not
    cover; meanwhile the process's other database work goes on; the refresh lands later."""
    from agents import compaction

    tenant, agent, _ = agent_and_key
    texts = [("user", FACTS[0]), ("assistant", "Hello Alice."), ("user", FACTS[1])]
    session = await database_sync_to_async(make_session_with_items)(tenant, agent, texts)
    first = await database_sync_to_async(summary_refresh)(
        session_id=session.pk, tenant_id=tenant.pk
    )
    more = [("user", FACTS[2]), ("assistant", "Noted.")] + [
        ("user", f"Also add item {n}.") for n in range(6)
    ]

    def add_more():
        with tenant_scope(tenant):
            for index, (role, text) in enumerate(more, start=len(texts)):
                TranscriptItem.objects.create(
                    tenant=tenant, session=session, sequence=index,
                    upstream_item_id=f"i{index}", role=role, text=text,
                )  # fmt: skip

    await database_sync_to_async(add_more)()
    release = threading.Event()
    summarize = compaction._summarize

    def slow_summarize(*args, **kwargs):
        assert release.wait(30), "the test never released the summarizer"
        return summarize(*args, **kwargs)

    monkeypatch.setattr(compaction, "_summarize", slow_summarize)
    try:
        seed = await compaction.seed_for_rotation(
            session_id=session.pk, tenant_id=tenant.pk, wait_s=0.05
        )
        # The summarizer is still blocked, and the database thread answers others.
        assert not release.is_set()

        def count() -> int:
            with tenant_scope(tenant):
                return Session.objects.filter(pk=session.pk).count()

        assert await database_sync_to_async(count)() == 1
    finally:
        release.set()
    assert seed.summary == first.text
    # Nothing the stored summary misses is left out: all eight newer turns, verbatim.
    assert [(turn.role, turn.text) for turn in seed.turns] == more

    def stored():
        with tenant_scope(tenant):
            return SessionSummary.objects.get(session_id=session.pk)

    for _ in range(300):
        summary = await database_sync_to_async(stored)()
        if summary.revision == 2:
            break
        await asyncio.sleep(0.05)
    assert summary.revision == 2 and "Rose Street" in summary.text
