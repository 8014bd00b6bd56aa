"""Webhooks to the tenant's systems, against a real HTTP receiver in a thread.

Retries are driven by the sweep with a clock the test passes (``deliveries_sweep(now=…,
inline=True)``), never by sleeping through the backoff. Signatures are checked with the code
block of README.md's "Receiving platform webhooks", run as it stands.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone

from agents import analysis, recordings, signals, tasks, webhooks
from agents import services as agent_services
from agents.configuration import agent_create
from agents.models import (
    Recording,
    Session,
    SessionAnalysis,
    TranscriptItem,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from agents.pii_evaluation import corpus_load
from billing.models import UsageEvent
from tenants import services as tenant_services
from tenants.models import AuditEvent, Tenant
from tenants.scoping import scopes_disabled, tenant_scope

README = Path(__file__).resolve().parents[2] / "README.md"
ENDED = WebhookEndpoint.Event.SESSION_ENDED
STARTED = WebhookEndpoint.Event.SESSION_STARTED
ANALYZED = WebhookEndpoint.Event.SESSION_ANALYZED
READY = WebhookEndpoint.Event.RECORDING_READY


def readme_verifier():
    """``verify_platform_webhook`` from README.md's "Receiving platform webhooks" section."""
    text = README.read_text()
    section = text[text.index("## Receiving platform webhooks") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    return namespace["verify_platform_webhook"]


class Receiver:
    """A tenant's webhook receiver: answers each path with the next of its scripted statuses
    (200 once they run out), the answer's body naming the status and the attempt."""

    def __init__(self, script: dict[str, list[int]] | None = None):
        self.script = {path: list(statuses) for path, statuses in (script or {}).items()}
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.requests.append((self.path, dict(self.headers.items()), body))
                    number = sum(1 for path, _, _ in outer.requests if path == self.path)
                    statuses = outer.script.get(self.path) or []
                    status = statuses.pop(0) if statuses else 200
                answer = f"status {status} for request {number}".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str | None = None) -> list[dict]:
        return [json.loads(body) for p, _, body in self.requests if path in (None, p)]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def private_allowed(settings):
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = True  # the receiver listens on 127.0.0.1


def make_agent(tenant, name="Orders"):
    return agent_create(tenant=tenant, actor=None, fields={"name": name, "provider": "local"})


def make_endpoint(tenant, url, events=(ENDED,), agent=None):
    return webhooks.webhook_endpoint_create(
        tenant=tenant, actor=None, fields={"url": url, "events": list(events), "agent": agent}
    )


def session_with_transcript(tenant, agent):
    with tenant_scope(tenant):
        session = Session.objects.create(tenant=tenant, agent=agent, channel="api", model="m")
        for sequence, (role, text) in enumerate(
            [("user", "Where is order 42?"), ("assistant", "It shipped on Monday.")]
        ):
            TranscriptItem.objects.create(
                tenant=tenant, session=session, sequence=sequence,
                upstream_item_id=f"item_{sequence}", role=role, text=text,
            )  # fmt: skip
    return session


def end(session, reason="client_closed"):
    agent_services.session_end_record(
        session_id=session.pk, tenant_id=session.tenant_id, reason=reason,
        audio_in_ms=2500, audio_out_ms=4000,
    )  # fmt: skip


def deliveries(tenant):
    with tenant_scope(tenant):
        return list(WebhookDelivery.objects.order_by("pk"))


def attempts_of(delivery):
    with tenant_scope(delivery.tenant_id):
        return list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))


def sweep(now):
    return webhooks.deliveries_sweep(now=now, inline=True)


# --- schedule ---------------------------------------------------------------------------------


def test_the_retry_schedule_backs_off_and_ends_within_24_hours_of_the_first_attempt():
    first = timezone.now()
    now, attempts, delays = first, 0, []
    while True:
        attempts += 1
        later = webhooks.retry_at(
            first_attempt_at=first, attempts=attempts, now=now, uniform=lambda a, b: 1.0
        )
        if later is None:
            break
        delays.append(round((later - now).total_seconds()))
        now = later
    assert delays == [10, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800, 1040]
    assert now == first + timedelta(hours=24)  # the last attempt: exactly at the window's end
    # Jitter stays within ±20 %, and never past the window.
    low = webhooks.retry_at(first_attempt_at=first, attempts=4, now=first, uniform=lambda a, b: a)
    high = webhooks.retry_at(first_attempt_at=first, attempts=4, now=first, uniform=lambda a, b: b)
    assert (low - first, high - first) == (timedelta(seconds=480), timedelta(seconds=720))
    late = first + timedelta(hours=23, minutes=59)
    assert webhooks.retry_at(first_attempt_at=first, attempts=9, now=late) == first + timedelta(
        hours=24
    )


# --- delivery ---------------------------------------------------------------------------------


def test_a_receiver_failing_twice_gets_one_successful_delivery_and_the_log_shows_three_attempts(
    world, receiver, private_allowed, django_capture_on_commit_callbacks, client
):
    receiver.script["/hook"] = [500, 503]
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/hook")
    session = session_with_transcript(world.tenant_a, agent)
    with django_capture_on_commit_callbacks(execute=True):
        end(session)
    [delivery] = deliveries(world.tenant_a)
    assert (delivery.event_type, delivery.status, delivery.attempts) == (ENDED, "pending", 0)

    start = timezone.now()
    assert sweep(start) == 1  # 500
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    wait = (delivery.next_attempt_at - start).total_seconds()
    assert 8 <= wait <= 12  # 10 s ± 20 %
    assert sweep(start + timedelta(seconds=5)) == 0  # not due yet: nothing sent
    assert len(receiver.requests) == 1

    assert sweep(delivery.next_attempt_at) == 1  # 503
    delivery.refresh_from_db()
    assert 24 <= (delivery.next_attempt_at - start).total_seconds() - wait <= 36
    assert sweep(delivery.next_attempt_at) == 1  # 200
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 3)
    assert sweep(delivery.next_attempt_at + timedelta(days=2)) == 0  # nothing more, ever

    assert [path for path, _, _ in receiver.requests] == ["/hook"] * 3
    bodies = receiver.bodies()
    assert {body["id"] for body in bodies} == {delivery.event_id}  # the same event each time
    assert len({body["nonce"] for body in bodies}) == 3  # a fresh nonce per attempt
    log = attempts_of(delivery)
    assert [(a.number, a.http_status, a.error_kind) for a in log] == [
        (1, 500, "http_error"), (2, 503, "http_error"), (3, 200, ""),
    ]  # fmt: skip
    assert [a.response_excerpt for a in log] == [
        "status 500 for request 1", "status 503 for request 2", "status 200 for request 3",
    ]  # fmt: skip
    assert all(0 <= a.latency_ms < 5000 for a in log)

    verify = readme_verifier()
    secret = Tenant.objects.get(pk=world.tenant_a.pk).webhook_signing_secret
    for _, headers, body in receiver.requests:
        assert verify(secret, headers, body)["id"] == delivery.event_id
        assert headers["X-VP-Event"] == "session.ended"
        assert headers["X-VP-Delivery"] == str(delivery.pk)

    client.force_login(world.member_a)  # a viewer reads the log
    page = client.get(reverse("webhook-detail", args=["tenant-a", delivery.endpoint_id]))
    text = page.content.decode()
    for excerpt in ("status 500 for request 1", "status 503 for request 2", "HTTP 200"):
        assert excerpt in text
    assert text.count('class="attempt"') == 3
    assert "Send again" not in text  # viewers cannot


def test_session_ended_payload_carries_transcript_cost_end_and_links(
    world, receiver, private_allowed, settings, django_capture_on_commit_callbacks
):
    settings.VP_PUBLIC_URL = "https://voice.example.com"
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/hook")
    session = session_with_transcript(world.tenant_a, agent)
    with tenant_scope(world.tenant_a):
        UsageEvent.objects.create(
            tenant=world.tenant_a, session=session, agent=agent, upstream_response_id="resp_1",
            occurred_at=timezone.now(), model="gpt-realtime-2", provider="openai",
            input_text_tokens=1_000_000,
        )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        end(session)
    sweep(timezone.now())
    [body] = receiver.bodies()
    assert body["type"] == "session.ended"
    assert body["tenant"]["slug"] == "tenant-a" and body["agent"] == {"id": agent.pk,
                                                                     "name": "Orders"}  # fmt: skip
    assert [(item["role"], item["text"]) for item in body["transcript"]] == [
        ("user", "Where is order 42?"), ("assistant", "It shipped on Monday."),
    ]  # fmt: skip
    assert body["session"]["end_reason"] == "client_closed"
    assert body["session"]["audio_in_seconds"] == 2.5
    assert body["session"]["audio_out_seconds"] == 4.0
    assert body["session"]["duration_seconds"] >= 0
    assert float(body["cost"]["amount"]) > 0 and body["cost"]["currency"] == "USD"
    assert body["links"]["session"] == (
        f"https://voice.example.com/t/tenant-a/sessions/{session.pk}/"
    )


def test_session_analyzed_carries_the_analysis_and_a_rerun_is_a_new_event(
    world, receiver, private_allowed, settings, django_capture_on_commit_callbacks
):
    settings.OPENAI_API_KEY = ""  # no key anywhere: the offline analysis
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}}}
    agent = agent_create(
        tenant=world.tenant_a, actor=None,
        fields={"name": "Orders", "provider": "local", "analysis_enabled": True,
                "analysis_schema": schema},
    )  # fmt: skip
    make_endpoint(world.tenant_a, receiver.url + "/hook", events=[ANALYZED])
    session = session_with_transcript(world.tenant_a, agent)
    with tenant_scope(world.tenant_a):
        Session.objects.filter(pk=session.pk).update(agent_version=agent.live_version_id)
    with django_capture_on_commit_callbacks(execute=True):
        end(session)
    with django_capture_on_commit_callbacks(execute=True):
        analysis.session_analyze(session_id=session.pk, tenant_id=world.tenant_a.pk)
    sweep(timezone.now())
    [first] = receiver.bodies()
    assert first["type"] == "session.analyzed"
    assert first["analysis"]["method"] == "local" and first["analysis"]["run"] == 1
    assert "order 42" in first["analysis"]["summary"]
    assert first["analysis"]["data"] == {"order_id": "42"}
    assert first["analysis"]["rule_extracted_fields"] == ["order_id"]
    with tenant_scope(world.tenant_a):
        session = Session.objects.get(pk=session.pk)
    with django_capture_on_commit_callbacks(execute=True):  # an admin asks for it again
        analysis.session_analysis_rerun(session=session, actor=None)
        analysis.session_analyze(session_id=session.pk, tenant_id=world.tenant_a.pk)
    sweep(timezone.now())
    second = receiver.bodies()[1]
    assert second["analysis"]["run"] == 2 and second["id"] != first["id"]


@pytest.mark.parametrize("policy", ["redact", "metadata"])
def test_no_personal_data_of_the_labelled_set_reaches_a_webhook(
    world, receiver, private_allowed, policy, django_capture_on_commit_callbacks
):
    """Payloads are built from what is stored, and go out through the data policy again: even
    content stored before the policy changed (raw here) leaves redacted, or not at all."""
    examples = [example for example in corpus_load() if example.entities]
    said = [example.text[e.start : e.end] for example in examples for e in example.entities]
    Tenant.objects.filter(pk=world.tenant_a.pk).update(data_policy=policy)
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/hook", events=[ENDED, ANALYZED])
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api")
        for sequence, example in enumerate(examples):
            TranscriptItem.objects.create(
                tenant=world.tenant_a, session=session, sequence=sequence,
                upstream_item_id=f"item_{sequence}", role="user", text=example.text,
                data={"arguments": {"said": example.text}},
            )  # fmt: skip
        stored = SessionAnalysis.objects.create(
            tenant=world.tenant_a, session=session, status="done", method="local",
            summary=" ".join(example.text for example in examples[:20]),
            data={"contact": examples[0].text}, requested_at=timezone.now(),
        )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        end(session)
    webhooks.deliveries_create(
        tenant_id=world.tenant_a.pk, event_type=ANALYZED, session_id=session.pk,
        subject={"analysis_id": stored.pk},
    )  # fmt: skip
    sweep(timezone.now())
    bodies = [body.decode() for _, _, body in receiver.requests]
    assert len(bodies) == 2
    leaked = sorted({value for value in said for body in bodies if value in body})
    assert leaked == []
    ended = next(json.loads(body) for body in bodies if '"session.ended"' in body)
    assert len(ended["transcript"]) == len(examples)  # the items are there, not their content
    if policy == "redact":
        assert "[card_number]" in json.dumps(ended["transcript"])
    else:
        assert {item["text"] for item in ended["transcript"]} == {""}


def test_recording_ready_carries_a_signed_expiring_download_link(
    world, receiver, private_allowed, settings, client, monkeypatch
):
    settings.VP_PUBLIC_URL = "https://voice.example.com"
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/hook", events=[READY])
    storage = recordings.recording_storage()
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="widget")
        name = storage.save("a/rec.ogg", ContentFile(b"OggS" + bytes(range(256)) * 4))
        recording = Recording.objects.create(
            tenant=world.tenant_a, session=session, file_name=name, format="audio/ogg",
            duration_ms=1234, bytes=storage.size(name), status="ready",
        )  # fmt: skip
    webhooks.deliveries_create(
        tenant_id=world.tenant_a.pk, event_type=READY, session_id=session.pk,
        subject={"recording_id": recording.pk},
    )  # fmt: skip
    sweep(timezone.now())
    [body] = receiver.bodies()
    sent = body["recording"]
    assert (sent["id"], sent["duration_ms"], sent["format"]) == (recording.pk, 1234, "audio/ogg")
    assert sent["download_url"].startswith("https://voice.example.com/recordings/")
    path = sent["download_url"].removeprefix("https://voice.example.com")
    response = client.get(path)  # no login: the link is the credential
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == storage.open(name).read()
    ranged = client.get(path, HTTP_RANGE="bytes=0-3")
    assert ranged.status_code == 206 and b"".join(ranged.streaming_content) == b"OggS"
    tampered = client.get(path[:-2] + ("AA" if not path.endswith("AA") else "BB"))
    assert tampered.status_code == 404 and b"not valid" in tampered.content
    later = time.time() + settings.VP_RECORDING_LINK_SECONDS + 1
    monkeypatch.setattr("django.core.signing.time.time", lambda: later)
    expired = client.get(path)
    assert expired.status_code == 404 and b"expired" in expired.content
    monkeypatch.undo()
    recordings.recording_delete(recording)  # erased: the link stops working
    gone = client.get(path)
    assert gone.status_code == 404 and b"no longer kept" in gone.content


def test_signatures_verify_with_the_readme_code_during_a_rotation(
    world, receiver, private_allowed, settings
):
    settings.VP_WEBHOOK_SECRET_OVERLAP_HOURS = 24
    old = Tenant.objects.get(pk=world.tenant_a.pk).webhook_signing_secret
    new = tenant_services.webhook_secret_rotate(tenant=Tenant.objects.get(pk=world.tenant_a.pk))
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/hook", events=[STARTED])
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api")
    webhooks.deliveries_create(tenant_id=world.tenant_a.pk, event_type=STARTED,
                               session_id=session.pk)  # fmt: skip
    sweep(timezone.now())
    [(_, headers, body)] = receiver.requests
    assert headers["X-VP-Signature"].count("v1=") == 2
    verify = readme_verifier()
    assert verify(old, headers, body)["type"] == "session.started"  # a receiver not yet updated
    with pytest.raises(ValueError, match="replayed"):
        verify(new, headers, body)  # the same request twice: its nonce was seen
    verify = readme_verifier()  # a receiver that has seen nothing yet
    assert verify(new, headers, body)["session"]["id"] == session.pk
    verify = readme_verifier()
    with pytest.raises(ValueError, match="signature"):
        verify(new, headers, body.replace(b"session.started", b"session.stopped"))
    with pytest.raises(ValueError, match="signature"):
        verify("whsec_someone_else", headers, body)
    with pytest.raises(ValueError, match="window"):
        verify(new, headers, body, now=time.time() + 301)


def test_a_repeated_session_ended_makes_one_delivery_per_endpoint(
    world, receiver, private_allowed, django_capture_on_commit_callbacks
):
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/one")
    make_endpoint(world.tenant_a, receiver.url + "/two")
    session = session_with_transcript(world.tenant_a, agent)
    with tenant_scope(world.tenant_a):  # its process died: the sweep guesses "abandoned"
        Session.objects.filter(pk=session.pk).update(
            heartbeat_at=timezone.now() - timedelta(hours=1)
        )
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert agent_services.sessions_sweep_abandoned() == 1
        end(session)  # then its real end arrives from the journal: session_ended again
        signals.send_on_commit(
            signals.session_ended, session_id=session.pk, tenant_id=world.tenant_a.pk
        )
    assert len(callbacks) >= 3
    made = deliveries(world.tenant_a)
    assert sorted(d.endpoint.url.rsplit("/", 1)[1] for d in made) == ["one", "two"]
    sweep(timezone.now())
    sweep(timezone.now() + timedelta(hours=1))
    assert sorted(path for path, _, _ in receiver.requests) == ["/one", "/two"]
    assert len({body["id"] for body in receiver.bodies()}) == 1  # one event, two endpoints


def test_per_agent_endpoints_get_only_their_agents_sessions_and_tenants_stay_apart(
    world, receiver, private_allowed
):
    orders, billing_agent = make_agent(world.tenant_a), make_agent(world.tenant_a, "Billing")
    make_endpoint(world.tenant_a, receiver.url + "/all", events=[STARTED, ENDED])
    make_endpoint(world.tenant_a, receiver.url + "/orders", events=[STARTED], agent=orders)
    make_endpoint(world.tenant_b, receiver.url + "/b", events=[STARTED, ENDED])
    for agent in (orders, billing_agent):
        with tenant_scope(world.tenant_a):
            session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api")
        webhooks.deliveries_create(
            tenant_id=world.tenant_a.pk, event_type=STARTED, session_id=session.pk
        )
    sweep(timezone.now())
    paths = [path for path, _, _ in receiver.requests]
    got = sorted(zip(paths, [body["agent"]["name"] for body in receiver.bodies()], strict=True))
    assert got == [("/all", "Billing"), ("/all", "Orders"), ("/orders", "Orders")]
    assert deliveries(world.tenant_b) == []
    with pytest.raises(ValidationError) as refused:  # another tenant's agent
        make_endpoint(world.tenant_b, receiver.url + "/x", agent=orders)
    assert "agent" in refused.value.message_dict


def test_a_private_or_metadata_url_is_refused_at_save_and_at_delivery(
    world, receiver, settings, client
):
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = False
    for url, says in [
        ("https://127.0.0.1/hook", "private, local or reserved"),
        ("https://169.254.169.254/latest/meta-data/", "private, local or reserved"),
        ("https://metadata.google.internal/computeMetadata/v1/", "private, local or reserved"),
        ("https://10.1.2.3:8443/hook", "private, local or reserved"),
        ("http://hooks.example.com/plain", "needs an https:// URL"),
    ]:
        with pytest.raises(ValidationError) as refused:
            make_endpoint(world.tenant_a, url)
        assert says in refused.value.message_dict["url"][0], url
    client.force_login(world.owner_a)
    response = client.post(
        reverse("webhook-list", args=["tenant-a"]),
        {"url": "https://169.254.169.254/", "events": [ENDED], "enabled": "on"},
    )
    assert response.status_code == 200
    assert "private, local or reserved" in response.content.decode()
    with tenant_scope(world.tenant_a):
        assert WebhookEndpoint.objects.count() == 0

    # Saved while allowed (a name that later points inside is the same): refused when sent.
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = True
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/hook", events=[STARTED])
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api")
    webhooks.deliveries_create(tenant_id=world.tenant_a.pk, event_type=STARTED,
                               session_id=session.pk)  # fmt: skip
    settings.VP_ALLOW_PRIVATE_WEBHOOKS = False
    sweep(timezone.now())
    [delivery] = deliveries(world.tenant_a)
    [attempt] = attempts_of(delivery)
    assert (attempt.error_kind, attempt.http_status) == ("forbidden_address", None)
    assert delivery.status == "failed"  # not retried for a day
    assert receiver.requests == []


def test_410_gone_turns_the_endpoint_off_audited(world, receiver, private_allowed):
    receiver.script["/gone"] = [410]
    agent = make_agent(world.tenant_a)
    endpoint = make_endpoint(world.tenant_a, receiver.url + "/gone", events=[STARTED, ENDED])
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api")
    for event in (STARTED, ENDED):
        webhooks.deliveries_create(tenant_id=world.tenant_a.pk, event_type=event,
                                   session_id=session.pk)  # fmt: skip
    sweep(timezone.now())
    assert len(receiver.requests) == 1  # the second delivery is not sent to a gone endpoint
    with tenant_scope(world.tenant_a):
        endpoint.refresh_from_db()
        audit = AuditEvent.objects.filter(action="webhook_endpoint.disabled").count()
    assert not endpoint.enabled and "410 Gone" in endpoint.disabled_reason
    assert audit == 1
    assert [d.status for d in deliveries(world.tenant_a)] == ["failed", "failed"]
    assert [a.error_kind for d in deliveries(world.tenant_a) for a in attempts_of(d)] == [
        "gone", "endpoint_disabled",
    ]  # fmt: skip


def test_an_attempt_claims_its_delivery_and_a_dead_workers_claim_runs_out(
    world, receiver, private_allowed
):
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/hook", events=[STARTED])
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api")
    [delivery] = webhooks.deliveries_create(
        tenant_id=world.tenant_a.pk, event_type=STARTED, session_id=session.pk
    )
    now = timezone.now()
    with tenant_scope(world.tenant_a):
        token = webhooks._claim(delivery.pk, now=now, due_only=True)  # a worker, then killed
        assert token
        assert webhooks._claim(delivery.pk, now=now, due_only=True) is None  # nobody else
        assert webhooks.delivery_attempt(delivery_id=delivery.pk, now=now) is None
    assert sweep(now + timedelta(seconds=30)) == 0  # in flight: not sent again
    assert receiver.requests == []
    assert sweep(now + timedelta(seconds=webhooks.CLAIM_SECONDS + 1)) == 1  # the claim ran out
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.claim_token) == ("succeeded", 1, "")


# --- console ----------------------------------------------------------------------------------


def test_console_endpoint_crud_send_test_and_send_again(world, receiver, private_allowed, client):
    client.force_login(world.owner_a)
    agent = make_agent(world.tenant_a)
    response = client.post(
        reverse("webhook-list", args=["tenant-a"]),
        {"url": receiver.url + "/hook", "events": [STARTED, ENDED], "agent": agent.pk,
         "description": "CRM", "enabled": "on"},
    )  # fmt: skip
    with tenant_scope(world.tenant_a):
        endpoint = WebhookEndpoint.objects.get()
    assert response.status_code == 302
    assert (endpoint.events, endpoint.agent_id, endpoint.description) == (
        [STARTED, ENDED], agent.pk, "CRM",
    )  # fmt: skip
    detail = reverse("webhook-detail", args=["tenant-a", endpoint.pk])

    page = client.post(reverse("webhook-test", args=["tenant-a", endpoint.pk]), follow=True)
    assert "Test event sent: HTTP 200" in page.content.decode()
    [(_, headers, body)] = receiver.requests
    assert headers["X-VP-Event"] == "ping" and json.loads(body)["type"] == "ping"
    assert readme_verifier()(Tenant.objects.get(pk=world.tenant_a.pk).webhook_signing_secret,
                             headers, body)["id"].startswith("evt_")  # fmt: skip

    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api")
    [delivery] = webhooks.deliveries_create(
        tenant_id=world.tenant_a.pk, event_type=STARTED, session_id=session.pk
    )
    sweep(timezone.now())
    page = client.post(
        reverse("webhook-send-again", args=["tenant-a", endpoint.pk, delivery.pk]), follow=True
    )
    assert "session.started sent again: HTTP 200" in page.content.decode()
    started = [body for body in receiver.bodies() if body["type"] == "session.started"]
    assert [body["id"] for body in started] == [delivery.event_id] * 2  # same event, same id
    assert started[0]["nonce"] != started[1]["nonce"]
    assert [(a.number, a.manual) for a in attempts_of(delivery)] == [(1, False), (2, True)]

    # Edit with a bad URL: the form shows why; nothing changes.
    response = client.post(detail, {"url": "ftp://x", "events": [ENDED]})
    assert response.status_code == 200 and "needs an https:// URL" in response.content.decode()
    response = client.post(detail, {"url": receiver.url + "/other", "events": [ENDED]})
    assert response.status_code == 302
    with tenant_scope(world.tenant_a):
        endpoint.refresh_from_db()
        actions = list(
            AuditEvent.objects.filter(action__startswith="webhook_endpoint.")
            .order_by("pk")
            .values_list("action", flat=True)
        )
    assert (endpoint.url, endpoint.events, endpoint.agent_id, endpoint.enabled) == (
        receiver.url + "/other", [ENDED], None, False,
    )  # fmt: skip
    client.post(reverse("webhook-delete", args=["tenant-a", endpoint.pk]))
    with tenant_scope(world.tenant_a):
        assert not WebhookEndpoint.objects.exists()
        assert not WebhookDelivery.objects.exists()
        actions.append(AuditEvent.objects.order_by("pk").last().action)
    assert actions == [
        "webhook_endpoint.created", "webhook_endpoint.updated", "webhook_endpoint.deleted",
    ]  # fmt: skip
    assert "Webhooks" in client.get(reverse("agent-list", args=["tenant-a"])).content.decode()


def test_console_roles_and_tenants(world, receiver, private_allowed, client):
    endpoint = make_endpoint(world.tenant_a, receiver.url + "/hook")
    detail = reverse("webhook-detail", args=["tenant-a", endpoint.pk])
    client.force_login(world.member_a)  # a viewer: reads, changes nothing
    assert client.get(reverse("webhook-list", args=["tenant-a"])).status_code == 200
    assert client.get(detail).status_code == 200
    for url in (detail, reverse("webhook-test", args=["tenant-a", endpoint.pk]),
                reverse("webhook-delete", args=["tenant-a", endpoint.pk])):  # fmt: skip
        assert (
            client.post(url, {"url": "https://example.com/", "events": [ENDED]}).status_code == 403
        )
    client.force_login(world.owner_b)  # another tenant: not found, whichever door
    assert client.get(detail).status_code == 404
    assert client.get(reverse("webhook-detail", args=["tenant-b", endpoint.pk])).status_code == 404
    assert client.post(reverse("webhook-test", args=["tenant-b", endpoint.pk])).status_code == 404
    assert client.post(reverse("webhook-delete", args=["tenant-b", endpoint.pk])).status_code == 404
    with scopes_disabled():
        endpoint.refresh_from_db()
        assert (endpoint.url, endpoint.enabled) == (receiver.url + "/hook", True)
    assert receiver.requests == []


def test_the_task_attempts_once_and_a_duplicate_message_posts_nothing(
    world, receiver, private_allowed
):
    agent = make_agent(world.tenant_a)
    make_endpoint(world.tenant_a, receiver.url + "/hook", events=[STARTED])
    with tenant_scope(world.tenant_a):
        session = Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api")
    [delivery] = webhooks.deliveries_create(
        tenant_id=world.tenant_a.pk, event_type=STARTED, session_id=session.pk
    )
    tasks.webhook_deliver.apply(args=(delivery.pk, world.tenant_a.pk))
    tasks.webhook_deliver.apply(args=(delivery.pk, world.tenant_a.pk))  # redelivered message
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("succeeded", 1)
