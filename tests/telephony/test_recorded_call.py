"""A recorded phone call against the local engine: the agent first says the recording notice,
then the call goes on; the stored recording (μ-law decoded onto the 24 kHz timeline) lasts the
call's input audio and holds the announcement on the agent's side."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import soundfile
from asgiref.sync import sync_to_async

from agents.models import Agent, Recording, TranscriptItem
from tenants.scoping import scopes_disabled

from .test_media_stream import (
    RecordingConsumer,  # noqa: F401 - the application fixture's consumer
    _warm_engines,  # noqa: F401
    application,  # noqa: F401
    ended_session,
    open_stream,
    receive_through,
    send_audio,
    transactional,
    webhook_token,
)

pytestmark = [pytest.mark.usefixtures("phone_urls")]
NOTICE = "This call is recorded for quality."


@sync_to_async
def record_the_agent(agent_id: int) -> None:
    with scopes_disabled():
        Agent.objects.filter(pk=agent_id).update(recording_enabled=True, recording_notice=NOTICE)


@sync_to_async
def recording_and_items(session_id: int) -> tuple[Recording | None, list[TranscriptItem]]:
    with scopes_disabled():
        return (
            Recording.objects.filter(session_id=session_id).first(),
            list(TranscriptItem.objects.filter(session_id=session_id).order_by("sequence")),
        )


@transactional
async def test_a_recorded_call_announces_it_and_is_stored(
    application,  # noqa: F811 - the fixture imported above
    phone,
    ulaw_silence,
    recordings_dir,
):
    await record_the_agent(phone.agent.pk)
    token = await webhook_token()
    communicator, twilio = await open_stream(application, token)
    try:
        # The announcement is the call's first response, before the caller says anything.
        announced = await receive_through(communicator, "response.done")
        assert any(message["event"] == "media" for message in announced)
        await send_audio(communicator, twilio, ulaw_silence)
        await communicator.send_to(text_data=twilio.stop())
        await communicator.receive_output(timeout=20)
    finally:
        await communicator.disconnect()
    session = await ended_session()

    deadline = time.monotonic() + 30
    while True:
        recording, items = await recording_and_items(session.pk)
        if recording is not None and recording.status != "recording":
            break
        assert time.monotonic() < deadline, "the recording was not stored"
        await asyncio.sleep(0.1)
    assert [(item.role, item.text) for item in items][:1] == [("assistant", NOTICE)]
    assert recording.status == "ready", recording.reason
    assert abs(recording.duration_ms - session.audio_in_ms) <= 100
    audio, rate = soundfile.read(recordings_dir / recording.file_name)
    assert rate == 24_000
    assert abs(len(audio) * 1000 / rate - session.audio_in_ms) <= 100
    assert np.abs(audio[:, 1]).max() > 0.1  # the agent's announcement, on its side
