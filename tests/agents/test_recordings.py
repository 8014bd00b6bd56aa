"""Recordings on the Django side: who records (agent setting under the tenant's policy), what
a session's policy and an agent version carry, the phone announcement, storing and deleting."""

from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import replace

import numpy as np
import pytest
import soundfile

from agents import recordings
from agents.configuration import agent_config, agent_create
from agents.models import Recording, Session
from agents.realtime.policy import recording_announcement
from agents.realtime.relay.capture import Result
from agents.realtime.responder import decide
from agents.selectors import policy_for_agent, recording_enabled_for
from agents.signals import recording_ready
from tenants.scoping import tenant_scope
from tests.agents.test_bridge import make_policy, settle, started_bridge

FIELDS = {"kind": "voice_agent", "provider": "openai", "model": "gpt-realtime-2"}


@pytest.mark.parametrize(
    ("tenant_policy", "agent_setting", "recorded"),
    [
        ("per_agent", False, False),
        ("per_agent", True, True),
        ("always", False, True),
        ("never", True, False),
    ],
)
def test_the_tenants_policy_overrides_the_agents_setting(
    world, tenant_policy, agent_setting, recorded
):
    tenant = world.tenant_a
    tenant.recording_policy = tenant_policy
    tenant.save()
    agent = agent_create(
        tenant=tenant, actor=None,
        fields={"name": "A", **FIELDS, "recording_enabled": agent_setting,
                "recording_notice": "Calls are recorded for quality."},
    )  # fmt: skip
    with tenant_scope(tenant):
        assert recording_enabled_for(agent) is recorded
        policy = policy_for_agent(agent=agent, channel="phone")
    assert policy.recording is recorded
    assert policy.recording_notice == "Calls are recorded for quality."
    # An agent version snapshots the setting like the rest of the configuration.
    assert agent_config(agent)["recording_enabled"] is agent_setting


def test_nothing_is_recorded_under_metadata_only(world):
    tenant = world.tenant_a
    tenant.recording_policy, tenant.data_policy = "always", "metadata"
    tenant.save()
    agent = agent_create(
        tenant=tenant, actor=None, fields={"name": "A", **FIELDS, "recording_enabled": True}
    )
    with tenant_scope(tenant):
        assert recording_enabled_for(agent) is False
        policy = policy_for_agent(agent=agent, channel="widget")
    assert policy.recording is False
    # Even a policy built before the change (a session admitted a moment earlier) stores none.
    assert (
        recordings.capture_for(
            policy=replace(policy, recording=True), tenant_id=tenant.pk, session_id=1
        )
        is None
    )


def test_the_local_engine_says_the_announcement():
    instructions = recording_announcement("This call is   recorded.\n")
    assert decide([], instructions=instructions, tools=[]).text == "This call is recorded."
    assert '"This call is recorded."' in instructions  # what OpenAI's model is told to say


@pytest.mark.parametrize(
    ("channel", "recording", "announced"),
    [("phone", True, True), ("phone", False, False), ("widget", True, False)],
)
async def test_a_recorded_phone_call_starts_with_the_notice(channel, recording, announced):
    policy = make_policy(channel, recording=recording, recording_notice="This call is recorded.")
    bridge, upstream, _, _ = await started_bridge(policy)
    await settle()
    creates = [json.loads(m) for m in upstream.received if '"response.create"' in m]
    if announced:
        assert len(creates) == 1
        assert creates[0]["response"]["instructions"] == recording_announcement(
            "This call is recorded."
        )
    else:
        assert creates == []
    await bridge.close()


def _session(world) -> Session:
    agent = agent_create(tenant=world.tenant_a, actor=None, fields={"name": "A", **FIELDS})
    with tenant_scope(world.tenant_a):
        return Session.objects.create(tenant=world.tenant_a, agent=agent, channel="api", model="m")


def _ogg(ms: int) -> str:
    path = tempfile.mkstemp(suffix=".ogg")[1]
    silence = np.zeros((ms * 24, 2), dtype=np.int16)
    soundfile.write(path, silence, 24_000, format="OGG", subtype="OPUS")
    return path


@pytest.mark.django_db(transaction=True)
def test_a_stored_recording_is_ready_and_announced(world, recordings_dir):
    session = _session(world)
    recording = recordings.recording_start(tenant_id=world.tenant_a.pk, session_id=session.pk)
    heard = []

    def receiver(sender, **kwargs):
        heard.append(kwargs)

    recording_ready.connect(receiver)
    try:
        in_writer_thread(
            Result(_ogg(300), 300, {"item_a": 120}), tenant_id=world.tenant_a.pk,
            session_id=session.pk, recording_id=recording.pk,
        )  # fmt: skip
    finally:
        recording_ready.disconnect(receiver)
    with tenant_scope(world.tenant_a):
        recording.refresh_from_db()
    assert recording.status == "ready" and recording.duration_ms == 300
    assert recording.markers == {"item_a": 120} and recording.ready_at is not None
    stored = recordings_dir / recording.file_name
    assert stored.stat().st_size == recording.bytes > 0
    assert recording.file_name.startswith(f"{world.tenant_a.pk}/{session.pk}-")
    assert [(h["session_id"], h["tenant_id"], h["recording_id"]) for h in heard] == [
        (session.pk, world.tenant_a.pk, recording.pk)
    ]

    recordings.recording_delete(recording)
    assert not stored.exists()
    with tenant_scope(world.tenant_a):
        assert not Recording.objects.filter(pk=recording.pk).exists()


def in_writer_thread(result: Result, **where: int) -> None:
    """``_store`` where it runs for real: in the writer's thread (it closes that thread's
    database connection when done), committed (the test is transactional)."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            recordings._store(result, **where)
        except BaseException as error:  # noqa: BLE001 - shown by the test's thread
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive() and failures == []


@pytest.mark.django_db(transaction=True)
def test_a_dropped_recording_keeps_its_reason_and_no_file(world, recordings_dir):
    session = _session(world)
    recording = recordings.recording_start(tenant_id=world.tenant_a.pk, session_id=session.pk)
    in_writer_thread(
        Result(None, 0, dropped="the recording writer fell behind"), tenant_id=world.tenant_a.pk,
        session_id=session.pk, recording_id=recording.pk,
    )  # fmt: skip
    with tenant_scope(world.tenant_a):
        recording.refresh_from_db()
    assert (recording.status, recording.reason) == ("dropped", "the recording writer fell behind")
    assert not recordings_dir.exists() or not list(recordings_dir.rglob("*"))
    recordings.recording_delete(recording)  # no file: only the row goes
    with tenant_scope(world.tenant_a):
        assert not Recording.objects.exists()


def test_the_agent_form_turns_recording_on_with_the_default_notice(client, world):
    from django.urls import reverse

    from agents.models import Agent
    from tests.console.test_console_pages import AGENT_FORM

    client.force_login(world.owner_a)
    form = {**AGENT_FORM, "recording_enabled": "on", "recording_notice": "  "}
    response = client.post(reverse("agent-create", args=["tenant-a"]), form)
    assert response.status_code == 302
    with tenant_scope(world.tenant_a):
        agent = Agent.objects.get(name="Sales")
        assert agent.recording_enabled is True
        assert agent.recording_notice == "This conversation is recorded."
        assert agent.live_version.config["recording_enabled"] is True


def test_the_recording_of_an_abandoned_session_says_why_it_is_missing(
    world, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from agents.services import sessions_sweep_abandoned

    session = _session(world)
    recordings.recording_start(tenant_id=world.tenant_a.pk, session_id=session.pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert sessions_sweep_abandoned(now=timezone.now() + timedelta(days=1)) == 1
    with tenant_scope(world.tenant_a):
        recording = Recording.objects.get(session=session)
    assert recording.status == "failed" and "stopped before" in recording.reason
