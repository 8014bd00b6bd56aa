"""Post-call analysis: against a fake OpenAI Responses API over HTTP, and offline."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import pytest
from django.urls import reverse
from django.utils import timezone

from agents import analysis, signals
from agents.configuration import agent_create
from agents.extraction import strict_schema
from agents.models import Agent, AgentVersion, Session, SessionAnalysis, TranscriptItem
from agents.services import session_end_record
from agents.tasks import session_analyze
from billing.models import UsageEvent
from billing.selectors import events_total_cost
from tenants import services
from tenants.models import Tenant
from tenants.scoping import scopes_disabled, tenant_scope

RUBRIC = "Passed when the caller's problem was solved or a refund was issued."
SCHEMA = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "issue": {"type": "string"},
        "resolved": {"type": "boolean"},
        "email": {"type": "string", "format": "email"},
        "phone": {"type": "string"},
        "priority": {"type": "string", "enum": ["low", "normal", "urgent"]},
        "items_count": {"type": "integer"},
        "refund_amount": {"type": "number"},
    },
    "required": ["order_id", "issue", "resolved"],
}
CONVERSATION = [
    ("assistant", "Thanks for calling Brightside Appliances, this is Max. How can I help?"),
    ("user", "Hi Max, my name is Dana Price. My order number is A-4821."),
    ("assistant", "Thank you Dana. What seems to be the problem with order A-4821?"),
    (
        "user",
        "My issue is that the blender arrived with a cracked jug. It's quite urgent, "
        "I need it for a party on Saturday.",
    ),  # fmt: skip
    ("assistant", "I'm sorry to hear that. Could you confirm your email address?"),
    ("user", "Sure, it's dana.price@example.com, or call me on +1 415 555 0100."),
    ("user", "There were 2 items in the box and only the jug is broken."),
    (
        "assistant",
        "I've issued a refund of 49.90 dollars for the jug and a replacement ships "
        "tomorrow. Your case has been resolved.",
    ),  # fmt: skip
    ("user", "Great, thanks, that's all I needed."),
]
TENANT_KEY = "sk-tenant-" + "k" * 30


class FakeResponsesApi(BaseHTTPRequestHandler):
    """The Responses API as far as the analysis uses it: records each request, answers with
    ``answer`` as the output text and ``usage`` as the usage."""

    requests: list = []
    answer: dict = {}
    usage = {
        "input_tokens": 1200, "input_tokens_details": {"cached_tokens": 200},
        "output_tokens": 300, "output_tokens_details": {"reasoning_tokens": 100},
        "total_tokens": 1500,
    }  # fmt: skip

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeResponsesApi.requests.append((self.path, self.headers.get("Authorization"), body))
        reply = {
            "id": f"resp_analysis_{len(FakeResponsesApi.requests)}", "object": "response",
            "created_at": 0, "status": "completed", "model": body["model"],
            "output": [{
                "id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "annotations": [],
                             "text": json.dumps(FakeResponsesApi.answer)}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": FakeResponsesApi.usage,
        }  # fmt: skip
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_openai(settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeResponsesApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.VP_OPENAI_API_BASE = f"http://127.0.0.1:{server.server_address[1]}/v1"
    FakeResponsesApi.requests = []
    yield FakeResponsesApi
    server.shutdown()
    server.server_close()


@pytest.fixture
def queued(monkeypatch):
    """The analysis tasks queued (the broker is not under test here)."""
    calls: list[tuple] = []
    monkeypatch.setattr(session_analyze, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def shop(world, settings):
    settings.OPENAI_API_KEY = ""
    agent = agent_create(
        tenant=world.tenant_a, actor=world.owner_a,
        fields={"name": "Support", "provider": "local", "instructions": "Help with orders.",
                "analysis_enabled": True, "analysis_rubric": RUBRIC, "analysis_schema": SCHEMA},
    )  # fmt: skip
    return world.tenant_a, agent


def new_session(tenant, agent, conversation=CONVERSATION):
    agent.refresh_from_db()
    with tenant_scope(tenant):
        session = Session.objects.create(
            tenant=tenant, agent=agent, agent_version=agent.live_version, channel="widget",
            model="gpt-realtime-2",
        )  # fmt: skip
        for index, (role, text) in enumerate(conversation):
            TranscriptItem.objects.create(
                tenant=tenant, session=session, sequence=index, upstream_item_id=f"i{index}",
                role=role, text=text,
            )  # fmt: skip
    return session


def end(session, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        session_end_record(
            session_id=session.pk, tenant_id=session.tenant_id, reason="client_closed",
            audio_in_ms=1000, audio_out_ms=1000,
        )  # fmt: skip


def analysis_of(session):
    with tenant_scope(session.tenant_id):
        return SessionAnalysis.objects.get(session=session)


def analysis_events(tenant):
    with tenant_scope(tenant):
        return list(UsageEvent.objects.filter(kind=UsageEvent.Kind.ANALYSIS))


MODEL_ANSWER = {
    "summary": "Dana Price reported a cracked blender jug on order A-4821; a refund of 49.90 "
    "was issued and a replacement ships tomorrow.",
    "success": {"verdict": "passed", "reason": "A refund was issued and the caller was happy."},
    "data": {"order_id": "A-4821", "issue": "cracked blender jug", "resolved": True,
             "email": "dana.price@example.com", "phone": None, "priority": "urgent",
             "items_count": 2, "refund_amount": 49.9},
}  # fmt: skip


def test_analysis_with_the_responses_api(
    client, world, shop, fake_openai, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    services.provider_credential_set(tenant=tenant, secret=TENANT_KEY)
    fake_openai.answer = MODEL_ANSWER
    analysed = []
    signals.session_analyzed.connect(
        lambda sender, **kwargs: analysed.append(kwargs), weak=False, dispatch_uid="test"
    )
    try:
        session = new_session(tenant, agent)
        end(session, django_capture_on_commit_callbacks)
        assert queued == [(session.pk, tenant.pk)]
        with django_capture_on_commit_callbacks(execute=True):
            session_analyze.apply(args=(session.pk, tenant.pk)).get()
        # A redelivered task: the run is done; no second call, no second charge.
        with django_capture_on_commit_callbacks(execute=True):
            session_analyze.apply(args=(session.pk, tenant.pk)).get()
    finally:
        signals.session_analyzed.disconnect(dispatch_uid="test")

    assert len(fake_openai.requests) == 1
    path, authorization, body = fake_openai.requests[0]
    assert path == "/v1/responses"
    assert authorization == f"Bearer {TENANT_KEY}"
    assert body["model"] == "gpt-5-mini"
    assert RUBRIC in body["instructions"]
    assert "User: Hi Max, my name is Dana Price. My order number is A-4821." in body["input"]
    assert "Assistant: I've issued a refund of 49.90 dollars" in body["input"]
    text_format = body["text"]["format"]
    assert (text_format["type"], text_format["name"], text_format["strict"]) == (
        "json_schema", "session_analysis", True,
    )  # fmt: skip
    sent = text_format["schema"]
    assert sent["required"] == ["summary", "success", "data"]
    assert sent["properties"]["success"]["properties"]["verdict"]["enum"] == ["passed", "failed"]
    data_schema = sent["properties"]["data"]
    # (PostgreSQL's jsonb keeps keys in an order of its own: compared as sets.)
    assert set(data_schema["properties"]) == set(SCHEMA["properties"])
    assert set(data_schema["required"]) == set(SCHEMA["properties"])  # strict: all required
    assert data_schema["additionalProperties"] is False
    assert data_schema["properties"]["order_id"] == {"type": "string"}  # required: as is
    assert data_schema["properties"]["phone"] == {"type": ["string", "null"]}  # optional
    assert data_schema["properties"]["priority"]["enum"] == ["low", "normal", "urgent", None]

    stored = analysis_of(session)
    assert (stored.status, stored.method, stored.model, stored.run) == (
        "done", "openai", "gpt-5-mini", 1,
    )  # fmt: skip
    assert stored.summary == MODEL_ANSWER["summary"]
    assert (stored.success, stored.success_reason) == ("passed", MODEL_ANSWER["success"]["reason"])
    expected = {k: v for k, v in MODEL_ANSWER["data"].items() if v is not None}
    assert stored.data == expected  # the null strict mode forced on "phone" is gone
    jsonschema.validate(stored.data, SCHEMA)
    assert (stored.data_valid, stored.rule_fields, stored.error) == (True, [], "")
    assert (stored.input_tokens, stored.cached_tokens, stored.output_tokens) == (1200, 200, 300)
    assert analysed == [
        {"signal": signals.session_analyzed, "session_id": session.pk, "tenant_id": tenant.pk,
         "analysis_id": stored.pk, "run": 1}
    ]  # fmt: skip

    [event] = analysis_events(tenant)
    assert (event.upstream_response_id, event.model, event.session_id, event.agent_id) == (
        f"analysis:{session.pk}:1", "gpt-5-mini", session.pk, agent.pk,
    )  # fmt: skip
    assert (event.input_text_tokens, event.cached_text_tokens, event.output_text_tokens) == (
        1200, 200, 300,
    )  # fmt: skip
    # gpt-5-mini: 1,000 × 0.25 + 200 × 0.025 + 300 × 2.00 per 1M tokens
    assert events_total_cost([event]) == Decimal("0.000855")

    client.force_login(world.owner_a)
    page = client.get(reverse("session-detail", args=["tenant-a", session.pk])).content.decode()
    assert MODEL_ANSWER["summary"] in page
    assert "OpenAI · <code>gpt-5-mini</code>" in page
    assert '<dd id="analysis-cost">$0.000855</dd>' in page
    assert "rule-extracted" not in page


def test_model_data_that_breaks_the_schema_is_kept_and_marked_invalid(
    shop, fake_openai, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    services.provider_credential_set(tenant=tenant, secret=TENANT_KEY)
    fake_openai.answer = {**MODEL_ANSWER, "data": {**MODEL_ANSWER["data"], "email": "nope"}}
    session = new_session(tenant, agent)
    end(session, django_capture_on_commit_callbacks)
    analysis.session_analyze(session_id=session.pk, tenant_id=tenant.pk)
    stored = analysis_of(session)
    assert (stored.method, stored.data_valid) == ("openai", False)
    assert stored.data_problem == "email: 'nope' is not a 'email'"


def test_an_api_failure_falls_back_to_local_and_says_so(
    shop, settings, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    services.provider_credential_set(tenant=tenant, secret=TENANT_KEY)
    settings.VP_OPENAI_API_BASE = "http://127.0.0.1:9/v1"  # nothing listens there
    session = new_session(tenant, agent)
    end(session, django_capture_on_commit_callbacks)
    analysis.session_analyze(session_id=session.pk, tenant_id=tenant.pk)
    stored = analysis_of(session)
    assert (stored.status, stored.method, stored.model) == ("done", "local", "")
    assert stored.error == (
        "The OpenAI call failed (APIConnectionError); the local fallback was used."
    )
    assert stored.data["order_id"] == "A-4821"
    assert analysis_events(tenant) == []  # no answer, nothing billed


def test_offline_the_local_fallback_extracts_by_rules(
    shop, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    session = new_session(tenant, agent)
    end(session, django_capture_on_commit_callbacks)
    analysis.session_analyze(session_id=session.pk, tenant_id=tenant.pk)
    stored = analysis_of(session)
    assert (stored.status, stored.method, stored.error) == ("done", "local", "")
    assert stored.data == {
        "order_id": "A-4821",
        "issue": "the blender arrived with a cracked jug",
        "resolved": True,
        "email": "dana.price@example.com",
        "phone": "+1 415 555 0100",
        "priority": "urgent",
        "items_count": 2,
        "refund_amount": 49.9,
    }
    jsonschema.validate(stored.data, agent.analysis_schema)
    assert stored.data_valid is True
    assert set(stored.rule_fields) == set(SCHEMA["properties"])  # each marked as the rules'
    assert stored.success == "not_evaluated"
    assert stored.success_reason.startswith("Not evaluated: the local fallback")
    assert "User: Hi Max, my name is Dana Price." in stored.summary
    assert "User: My order number is A-4821." in stored.summary
    assert analysis_events(tenant) == []


def test_local_fallback_omits_what_it_cannot_find_and_flags_a_missing_required_field(
    shop, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    conversation = [
        ("user", "Hello, the app keeps crashing when I open the settings."),
        ("assistant", "Have you tried reinstalling it?"),
        ("user", "Yes, it still doesn't work."),
    ]
    session = new_session(tenant, agent, conversation)
    end(session, django_capture_on_commit_callbacks)
    analysis.session_analyze(session_id=session.pk, tenant_id=tenant.pk)
    stored = analysis_of(session)
    assert stored.data == {"resolved": False}  # the end of the call: still doesn't work
    assert stored.rule_fields == ["resolved"]
    assert stored.data_valid is False
    assert stored.data_problem == "Required but not found in the conversation: order_id, issue"


def test_session_ended_twice_queues_one_analysis(
    shop, fake_openai, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    session = new_session(tenant, agent)
    end(session, django_capture_on_commit_callbacks)
    # The sweep's "abandoned" replaced by the real end: the signal comes again.
    with django_capture_on_commit_callbacks(execute=True):
        signals.send_on_commit(signals.session_ended, session_id=session.pk, tenant_id=tenant.pk)
    assert queued == [(session.pk, tenant.pk)]
    with tenant_scope(tenant):
        assert SessionAnalysis.objects.count() == 1


def test_no_analysis_when_the_agent_version_had_it_off(
    world, queued, django_capture_on_commit_callbacks
):
    agent = agent_create(
        tenant=world.tenant_a, actor=world.owner_a, fields={"name": "Plain", "provider": "local"}
    )
    session = new_session(world.tenant_a, agent)
    end(session, django_capture_on_commit_callbacks)
    assert queued == []
    with tenant_scope(world.tenant_a):
        assert not SessionAnalysis.objects.exists()


def test_a_version_saved_before_analysis_existed_had_it_off(
    shop, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop  # analysis on now
    old_config = {
        key: value for key, value in agent.live_version.config.items()
        if not key.startswith("analysis_")
    }  # fmt: skip
    with tenant_scope(tenant):
        old = AgentVersion.objects.create(tenant=tenant, agent=agent, number=99, config=old_config)
    session = new_session(tenant, agent)
    with tenant_scope(tenant):
        Session.objects.filter(pk=session.pk).update(agent_version=old)
    end(session, django_capture_on_commit_callbacks)
    assert queued == []


def test_a_task_for_another_tenant_finds_nothing(shop, world, queued):
    tenant, agent = shop
    session = new_session(tenant, agent)
    with tenant_scope(tenant):
        SessionAnalysis.objects.create(
            tenant=tenant, session=session, requested_at=session.started_at
        )
    assert analysis.session_analyze(session_id=session.pk, tenant_id=world.tenant_b.pk) is None
    assert analysis_of(session).status == "pending"


def test_a_run_claimed_by_another_worker_is_retried_not_run_twice(shop, queued):
    tenant, agent = shop
    session = new_session(tenant, agent)
    with tenant_scope(tenant):
        SessionAnalysis.objects.create(
            tenant=tenant, session=session, requested_at=session.started_at,
            started_at=timezone.now(),
        )  # fmt: skip
    with pytest.raises(analysis.AnalysisBusy):
        analysis.session_analyze(session_id=session.pk, tenant_id=tenant.pk)
    assert analysis_of(session).status == "pending"


def test_the_strict_schema_makes_optional_properties_nullable_at_every_level():
    schema = {
        "type": "object",
        "properties": {
            "customer": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "vip": {"type": "boolean"}},
                "required": ["name"],
            },
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["customer"],
    }
    assert strict_schema(schema) == {
        "type": "object",
        "properties": {
            "customer": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "vip": {"type": ["boolean", "null"]}},
                "required": ["name", "vip"],
                "additionalProperties": False,
            },
            "tags": {"type": ["array", "null"], "items": {"type": "string"}},
        },
        "required": ["customer", "tags"],
        "additionalProperties": False,
    }


# --- console ------------------------------------------------------------------------------


def done_analysis(tenant, agent, *, success, data):
    session = new_session(tenant, agent, [("user", "hello")])
    with tenant_scope(tenant):
        Session.objects.filter(pk=session.pk).update(ended_at=session.started_at)
        SessionAnalysis.objects.create(
            tenant=tenant, session=session, status="done", method="local", success=success,
            data=data, requested_at=session.started_at,
        )  # fmt: skip
    return session


def listed(client, **query):
    response = client.get(reverse("session-list", args=["tenant-a"]), query)
    assert response.status_code == 200
    return {session.pk for session in response.context["sessions"]}


def test_the_sessions_list_filters_by_success_and_by_a_data_field(client, world, shop):
    tenant, agent = shop
    solved = done_analysis(tenant, agent, success="passed", data={"resolved": True, "n": 2})
    open_ = done_analysis(tenant, agent, success="failed", data={"resolved": False, "n": 3})
    unknown = done_analysis(tenant, agent, success="not_evaluated", data={"order_id": "A-1"})
    text_false = done_analysis(tenant, agent, success="failed", data={"resolved": "false"})
    plain = new_session(tenant, agent)
    client.force_login(world.owner_a)
    assert listed(client) == {solved.pk, open_.pk, unknown.pk, text_false.pk, plain.pk}
    assert listed(client, success="passed") == {solved.pk}
    assert listed(client, success="failed") == {open_.pk, text_false.pk}
    assert listed(client, success="not_evaluated") == {unknown.pk}
    # The JSON false, not the string "false".
    assert listed(client, data="resolved=false") == {open_.pk}
    assert listed(client, data="resolved=true") == {solved.pk}
    assert listed(client, data="n=3") == {open_.pk}
    assert listed(client, data="order_id=A-1") == {unknown.pk}
    assert listed(client, success="failed", data="resolved=false") == {open_.pk}
    response = client.get(reverse("session-list", args=["tenant-a"]), {"data": "resolved"})
    assert "Filter the data as field=value" in response.content.decode()


def test_the_session_page_shows_the_analysis_and_runs_it_again(
    client, world, shop, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    session = new_session(tenant, agent)
    end(session, django_capture_on_commit_callbacks)
    analysis.session_analyze(session_id=session.pk, tenant_id=tenant.pk)
    url = reverse("session-detail", args=["tenant-a", session.pk])
    client.force_login(world.owner_a)
    page = client.get(url).content.decode()
    assert "the blender arrived with a cracked jug" in page
    assert "Not evaluated" in page and "rule-extracted" in page
    assert "Local fallback" in page and "Run analysis again" in page

    again = reverse("session-analyze", args=["tenant-a", session.pk])
    client.force_login(world.member_a)  # a viewer
    assert client.post(again).status_code == 403
    client.force_login(world.owner_b)  # another tenant's owner
    assert client.post(reverse("session-analyze", args=["tenant-b", session.pk])).status_code == 404
    assert analysis_of(session).run == 1
    client.force_login(world.owner_a)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(again).status_code == 302
    stored = analysis_of(session)
    assert (stored.run, stored.status, stored.requested_by_id) == (2, "pending", world.owner_a.pk)
    assert queued == [(session.pk, tenant.pk), (session.pk, tenant.pk)]


@pytest.mark.parametrize(
    ("schema", "error"),
    [
        ("{not json", "Not valid JSON: "),
        ('{"type": "string"}', "The data schema&#x27;s top level must be"),
        ('{"type": "object", "properties": {"a": {"type": "nope"}}}', "Not a valid JSON Schema"),
        ('{"type": "object", "properties": {}}', "Name at least one property"),
        ('{"type": "object", "properties": {"a b": {}}}', "Property names use letters"),
        ('{"type": "object", "properties": {"a": {}}, "required": ["b"]}', "Required but not"),
    ],
)
def test_the_agent_form_validates_the_data_schema(client, world, shop, schema, error):
    _, agent = shop
    client.force_login(world.owner_a)
    form = {
        "name": "Support", "kind": "voice_agent", "provider": "local", "model": "gpt-realtime-2",
        "voice": "marin", "instructions": "Help.", "reasoning_effort": "low",
        "turn_detection": "server_vad", "vad_eagerness": "auto", "input_audio_format": "audio/pcm",
        "output_audio_format": "audio/pcm", "analysis_enabled": "on",
        "analysis_model": "gpt-5-nano", "analysis_rubric": "Solved.", "analysis_schema": schema,
    }  # fmt: skip
    url = reverse("agent-edit", args=["tenant-a", agent.pk])
    response = client.post(url, form)
    assert response.status_code == 200
    assert error in response.content.decode()
    with scopes_disabled():
        assert Agent.objects.get(pk=agent.pk).analysis_model == "gpt-5-mini"  # unchanged
    good = json.dumps({"type": "object", "properties": {"resolved": {"type": "boolean"}}})
    assert client.post(url, {**form, "analysis_schema": good}).status_code == 302
    with scopes_disabled():
        saved = Agent.objects.get(pk=agent.pk)
    assert saved.analysis_model == "gpt-5-nano"
    assert saved.analysis_schema == json.loads(good)  # the draft's


def test_the_sweep_queues_again_what_a_broker_outage_left_pending(
    shop, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    lost, fresh, dead, done = (new_session(tenant, agent) for _ in range(4))
    now = timezone.now()
    long_ago = now - timedelta(seconds=analysis.CLAIM_SECONDS + 1)
    with tenant_scope(tenant):
        for session, status, started_at in [
            (lost, "pending", None), (fresh, "pending", None), (dead, "pending", long_ago),
            (done, "done", long_ago),
        ]:  # fmt: skip
            requested = now if session is fresh else long_ago
            SessionAnalysis.objects.create(
                tenant=tenant, session=session, status=status, requested_at=requested,
                started_at=started_at,
            )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        assert analysis.analyses_sweep_pending(now=now) == 2
    assert sorted(queued) == sorted([(lost.pk, tenant.pk), (dead.pk, tenant.pk)])


def test_under_redact_the_model_and_the_row_see_no_personal_data(
    shop, fake_openai, queued, django_capture_on_commit_callbacks
):
    tenant, agent = shop
    Tenant.objects.filter(pk=tenant.pk).update(data_policy="redact")
    services.provider_credential_set(tenant=tenant, secret=TENANT_KEY)
    fake_openai.answer = MODEL_ANSWER  # a model that repeats the e-mail it was (not) told
    session = new_session(tenant, agent)
    end(session, django_capture_on_commit_callbacks)
    analysis.session_analyze(session_id=session.pk, tenant_id=tenant.pk)
    [(_, _, body)] = fake_openai.requests
    sent = json.dumps(body)
    assert "dana.price@example.com" not in sent and "415 555 0100" not in sent
    assert "[email]" in sent and "[phone_number]" in sent
    stored = analysis_of(session)
    assert stored.data["email"] == "[email]" and stored.data["order_id"] == "A-4821"


def test_under_metadata_only_no_analysis_is_made(shop, queued, django_capture_on_commit_callbacks):
    tenant, agent = shop
    Tenant.objects.filter(pk=tenant.pk).update(data_policy="metadata")
    session = new_session(tenant, agent)
    end(session, django_capture_on_commit_callbacks)
    assert queued == []
    with tenant_scope(tenant):
        assert not SessionAnalysis.objects.filter(session=session).exists()
