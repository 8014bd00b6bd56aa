"""Session recordings through a real platform (Daphne) and a scripted upstream.

The upstream answers after 200 ms of the caller's audio with 600 ms of agent audio, and the
caller barges in at 500 ms: the stored file (Ogg/Opus through the "recordings" storage) lasts
the session's audio_in_ms, the agent is heard from 200 ms and cut at 500 ms. A writer that
falls behind (a slow disk, injected into the server process) drops the recording, never audio.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import re
import textwrap
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message
from http.cookiejar import CookieJar
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.servers import Platform, api_connect, base_environ
from tests.upstreams import USAGE, ScriptedUpstream
from tests.waiting import until_sync

FRAME_MS = 20


def tone(ms: int, frequency: float) -> bytes:
    samples = np.arange(ms * 24)
    return (np.sin(2 * math.pi * frequency * samples / 24_000) * 12000).astype(np.int16).tobytes()


CALLER_FRAME = json.dumps(
    {"type": "input_audio_buffer.append", "audio": base64.b64encode(tone(20, 300)).decode()}
)
AGENT_DELTA = base64.b64encode(tone(100, 1000)).decode()  # 100 ms

SETUP = r"""
import json
from django.contrib.auth.models import User
from agents.configuration import agent_create
from tenants import services
from tenants.models import Membership, Tenant
from tenants.scoping import scopes_disabled, tenant_scope

with scopes_disabled():
    tenant = Tenant.objects.get(slug="demo")
fields = {"kind": "voice_agent", "provider": "openai", "model": "gpt-realtime-2",
          "voice": "marin", "turn_detection": "server_vad"}
with tenant_scope(tenant):
    recorded = agent_create(tenant=tenant, actor=None, fields={
        "name": "Recorded", "recording_enabled": True, **fields})
    plain = agent_create(tenant=tenant, actor=None, fields={"name": "Plain", **fields})
    _, recorded_key = services.api_key_issue(tenant=tenant, name="rec", default_agent=recorded)
    _, plain_key = services.api_key_issue(tenant=tenant, name="plain", default_agent=plain)
    viewer = User.objects.create_user("viewer", password="viewer-password-123")
    Membership.objects.create(tenant=tenant, user=viewer, role="viewer")
print(json.dumps({"recorded_key": recorded_key, "plain_key": plain_key}))
"""

ROWS = r"""
import json
from tenants.scoping import scopes_disabled
from agents.models import Recording, Session
with scopes_disabled():
    print(json.dumps({"sessions": list(Session.objects.order_by("pk").values(
        "pk", "audio_in_ms", "ended_at")), "recordings": list(Recording.objects.values(
        "session_id", "status", "reason", "file_name", "duration_ms", "bytes", "markers",
        "format"))}, default=str))
"""

# Injected into the server process (PYTHONPATH): every write of the recording writer is slow.
SLOW_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from agents.realtime.relay import capture

_apply = capture.Timeline.apply

def slow_apply(self, *entry):
    time.sleep(0.05)
    _apply(self, *entry)

capture.Timeline.apply = slow_apply
"""


class BargeInUpstream(ScriptedUpstream):
    """After 10 appends (200 ms) it answers with ``deltas`` × 100 ms of audio; after 25
    (500 ms) the caller's speech starts (server VAD) and the response is cancelled."""

    deltas = 6

    async def _barge(self, connection) -> None:
        appends = 0
        async for message in connection:
            if json.loads(message).get("type") != "input_audio_buffer.append":
                continue
            appends += 1
            if appends == 10:
                await self._start_answer(connection)
            elif appends == 25:
                await self._barge_in(connection)
                done = {"id": "resp_1", "object": "realtime.response", "status": "cancelled",
                        "output": [], "usage": USAGE}  # fmt: skip
                await connection.send(json.dumps({"type": "response.done", "response": done}))

    async def _barge_in(self, connection) -> None:
        speech = {"type": "input_audio_buffer.speech_started", "audio_start_ms": 500,
                  "item_id": "item_u"}  # fmt: skip
        await connection.send(json.dumps(speech))
        said = {"type": "output_audio", "transcript": "Hello, I can"}
        item = {"id": "item_a", "type": "message", "role": "assistant", "status": "incomplete",
                "content": [said]}  # fmt: skip
        await connection.send(json.dumps({"type": "response.output_item.done",
                                          "response_id": "resp_1", "output_index": 0,
                                          "item": item}))  # fmt: skip

    async def _start_answer(self, connection) -> None:
        response = {"id": "resp_1", "object": "realtime.response", "status": "in_progress",
                    "output": []}  # fmt: skip
        await connection.send(json.dumps({"type": "response.created", "response": response}))
        item = {"id": "item_a", "type": "message", "role": "assistant", "status": "in_progress",
                "content": []}  # fmt: skip
        await connection.send(json.dumps({"type": "response.output_item.added",
                                          "response_id": "resp_1", "output_index": 0,
                                          "item": item}))  # fmt: skip
        for _ in range(self.deltas):
            await connection.send(json.dumps({
                "type": "response.output_audio.delta", "event_id": "e", "response_id": "resp_1",
                "item_id": "item_a", "output_index": 0, "content_index": 0,
                "delta": AGENT_DELTA}))  # fmt: skip


async def converse(platform: Platform, api_key: str, *, deltas: int) -> list[dict]:
    """50 caller frames (1 s); the first 10, then (once the answer is in) 15, then (once the
    caller's speech is reported) 25. Returns every event received."""
    events: list[dict] = []
    async with api_connect(platform.ws_url, api_key, open_timeout=20, max_size=None) as socket:

        async def until_received(event_type: str, count: int = 1) -> None:
            while sum(event["type"] == event_type for event in events) < count:
                events.append(json.loads(await asyncio.wait_for(socket.recv(), 15)))

        await until_received("session.created")
        for _ in range(10):
            await socket.send(CALLER_FRAME)
        await until_received("response.output_audio.delta", deltas)
        for _ in range(15):
            await socket.send(CALLER_FRAME)
        await until_received("input_audio_buffer.speech_started")
        for _ in range(25):
            await socket.send(CALLER_FRAME)
        await until_received("response.done")
    return events


def rows(platform: Platform) -> dict:
    return json.loads(platform.shell(ROWS).splitlines()[-1])


def finished_recording(platform: Platform, session_id: int) -> dict:
    found: dict = {}

    def stored() -> bool:
        for recording in rows(platform)["recordings"]:
            if recording["session_id"] == session_id and recording["status"] != "recording":
                found.update(recording)
                return True
        return False

    until_sync(stored, "the recording is stored", timeout=60)
    return found


def rms(channel: np.ndarray, start_ms: int, end_ms: int) -> float:
    part = channel[start_ms * 24 : end_ms * 24].astype(np.float64)
    return float(np.sqrt(np.mean(part**2)))


class Console:
    """A console user over HTTP (the login form, then cookies)."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        page = self.opener.open(f"{base_url}/login/").read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
        form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
        self.opener.open(f"{base_url}/login/", urllib.parse.urlencode(form).encode())
        assert any(cookie.name == "sessionid" for cookie in self.jar), "the login failed"

    def get(self, path: str, **headers: str) -> tuple[int, Message, bytes]:
        request = urllib.request.Request(self.base_url + path, headers=headers)
        try:
            with self.opener.open(request) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("recordings")
    upstream = BargeInUpstream("barge")
    environ = base_environ(tmp_path, **upstream.environ, VP_RECONNECT_ATTEMPTS="0")
    platform = Platform(environ, tmp_path)
    try:
        created = json.loads(platform.shell(SETUP).splitlines()[-1])
        yield platform, created, tmp_path
    finally:
        platform.stop()
        upstream.stop()


@pytest.fixture(scope="module")
def recorded_session(recorded):
    platform, created, tmp_path = recorded
    events = asyncio.run(converse(platform, created["recorded_key"], deltas=6))
    session = rows(platform)["sessions"][-1]
    return events, session, finished_recording(platform, session["pk"])


def test_the_stored_file_is_the_conversation_as_heard(recorded, recorded_session):
    platform, _, tmp_path = recorded
    events, session, recording = recorded_session
    assert recording["status"] == "ready", recording
    assert recording["format"] == "audio/ogg"
    path = tmp_path / "recordings" / recording["file_name"]
    assert path.stat().st_size == recording["bytes"] > 0
    audio, rate = soundfile.read(path, dtype="int16")
    assert rate == 24_000 and audio.shape[1] == 2
    file_ms = len(audio) * 1000 / rate
    until_sync(lambda: rows(platform)["sessions"][-1]["ended_at"], "the session's end is stored")
    audio_in_ms = rows(platform)["sessions"][-1]["audio_in_ms"]
    assert audio_in_ms == 1000
    assert abs(file_ms - audio_in_ms) <= 100
    assert abs(recording["duration_ms"] - audio_in_ms) <= 100
    left, right = audio[:, 0], audio[:, 1]
    assert rms(left, 20, 980) > 4000  # the caller throughout
    assert rms(right, 20, 170) < 300  # the agent's answer arrived at 200 ms
    assert rms(right, 250, 470) > 4000  # heard until the caller spoke at 500 ms
    assert rms(right, 540, 980) < 300  # the 300 ms it had left were cut
    assert recording["markers"]["item_a"] == 200  # the transcript line seeks there
    # The client heard (received) every delta, the recording took nothing from it.
    assert sum(event["type"] == "response.output_audio.delta" for event in events) == 6


def test_owners_download_viewers_listen_and_ranges_seek(recorded, recorded_session):
    platform, _, tmp_path = recorded
    _, session, recording = recorded_session
    path = f"/t/{platform.seed['tenant']}/sessions/{session['pk']}/recording/"
    stored = (tmp_path / "recordings" / recording["file_name"]).read_bytes()
    owner = Console(platform.http_url, platform.seed["username"], platform.seed["password"])
    viewer = Console(platform.http_url, "viewer", "viewer-password-123")

    status, headers, body = owner.get(path + "?download=1")
    assert status == 200 and body == stored
    assert headers["Content-Disposition"].startswith("attachment;")
    status, _, body = viewer.get(path + "?download=1")
    assert status == 403 and b"Only owners and admins can download" in body
    status, headers, body = viewer.get(path)  # listening in the console is for every member
    assert status == 200 and body == stored and headers["Accept-Ranges"] == "bytes"

    status, headers, body = viewer.get(path, Range="bytes=100-299")
    assert status == 206 and body == stored[100:300]
    assert headers["Content-Range"] == f"bytes 100-299/{len(stored)}"
    status, headers, body = viewer.get(path, Range="bytes=-50")
    assert status == 206 and body == stored[-50:]
    status, headers, _ = viewer.get(path, Range=f"bytes={len(stored)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(stored)}"

    status, _, page = viewer.get(f"/t/{platform.seed['tenant']}/sessions/{session['pk']}/")
    page_text = page.decode()
    assert status == 200 and 'id="recording-player"' in page_text
    assert 'data-item="item_a"' in page_text and 'data-offset-ms="200"' in page_text
    assert "Only owners and admins can download it." in page_text


def test_recording_off_stores_nothing(recorded):
    platform, created, tmp_path = recorded
    files_before = sorted((tmp_path / "recordings").rglob("*"))
    events = asyncio.run(converse(platform, created["plain_key"], deltas=6))
    assert sum(event["type"] == "response.output_audio.delta" for event in events) == 6
    session = rows(platform)["sessions"][-1]
    until_sync(lambda: rows(platform)["sessions"][-1]["ended_at"], "the session's end is stored")
    assert all(r["session_id"] != session["pk"] for r in rows(platform)["recordings"])
    assert sorted((tmp_path / "recordings").rglob("*")) == files_before


def test_a_writer_that_falls_behind_drops_the_recording_never_the_audio(tmp_path):
    root = str(Path(__file__).resolve().parents[2])
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(textwrap.dedent(SLOW_WRITER.format(root=root)))
    upstream = BargeInUpstream("barge")
    upstream.deltas = 60  # 6 s of agent audio in one burst; the writer takes 50 ms per frame
    environ = base_environ(
        tmp_path, **upstream.environ, VP_RECONNECT_ATTEMPTS="0", VP_RECORDING_QUEUE_FRAMES="8",
        PYTHONPATH=os.pathsep.join(filter(None, [str(inject), os.environ.get("PYTHONPATH")])),
    )  # fmt: skip
    platform = Platform(environ, tmp_path)
    try:
        created = json.loads(platform.shell(SETUP).splitlines()[-1])
        events = asyncio.run(converse(platform, created["recorded_key"], deltas=60))
        assert sum(event["type"] == "response.output_audio.delta" for event in events) == 60
        session = rows(platform)["sessions"][-1]
        recording = finished_recording(platform, session["pk"])
        assert recording["status"] == "dropped"
        assert "fell behind" in recording["reason"] and not recording["file_name"]
        owner = Console(platform.http_url, platform.seed["username"], platform.seed["password"])
        page = owner.get(f"/t/{platform.seed['tenant']}/sessions/{session['pk']}/")[2].decode()
        assert "No recording: dropped." in page and "fell behind" in page
        assert not list((tmp_path / "recordings").rglob("*.ogg"))
    finally:
        platform.stop()
        upstream.stop()
