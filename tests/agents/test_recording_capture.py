"""The recording writer's timeline (agents.realtime.relay.capture), without a server: what the
file holds, where the agent's audio sits, the barge-in cut, G.711, and a full queue."""

from __future__ import annotations

import base64
import json
import math
import threading

import numpy as np
import pytest
import soundfile

from agents.realtime.relay import capture as capture_module
from agents.realtime.relay.capture import AudioCapture, Result


def tone(ms: int, frequency: float, rate: int = 24_000) -> bytes:
    samples = np.arange(ms * rate // 1000)
    return (np.sin(2 * math.pi * frequency * samples / rate) * 12000).astype(np.int16).tobytes()


def append(audio: bytes) -> str:
    encoded = base64.b64encode(audio).decode()
    return json.dumps({"type": "input_audio_buffer.append", "audio": encoded})


def delta(audio: bytes) -> str:
    return json.dumps({"type": "response.output_audio.delta", "response_id": "r", "item_id": "a",
                       "delta": base64.b64encode(audio).decode()})  # fmt: skip


def rms(channel: np.ndarray, start_ms: int, end_ms: int) -> float:
    part = channel[start_ms * 24 : end_ms * 24].astype(np.float64)
    return float(np.sqrt(np.mean(part**2))) if len(part) else 0.0


class Done:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: Result | None = None
        self.audio: np.ndarray | None = None

    def __call__(self, result: Result) -> None:
        self.result = result
        if result.path:  # the file is removed once on_done returns
            self.audio, rate = soundfile.read(result.path, dtype="int16")
            assert rate == 24_000
        self.event.set()

    def wait(self) -> Result:
        assert self.event.wait(30)
        assert self.result is not None
        return self.result


def test_the_agent_is_placed_where_received_and_cut_at_the_barge_in():
    done = Done()
    capture = AudioCapture(input_format="audio/pcm", output_format="audio/pcm", on_done=done)
    position = 0
    for _ in range(10):  # 200 ms of caller audio, 20 ms frames
        capture.caller_audio(append(tone(20, 300)), position)
        position += 20
    capture.response_started(position)
    capture.mark("item_agent", position, agent=True)
    for _ in range(6):  # 600 ms of agent audio received at once, at 200 ms
        capture.agent_audio(delta(tone(100, 1000)), position)
    for _ in range(15):  # the caller goes on: 300 ms
        capture.caller_audio(append(tone(20, 300)), position)
        position += 20
    capture.speech_started(position)  # a barge-in at 500 ms: the agent's rest is not heard
    capture.agent_audio(delta(tone(100, 1000)), position)  # a late delta of the cut response
    for _ in range(25):  # 500 ms more
        capture.caller_audio(append(tone(20, 300)), position)
        position += 20
    capture.close()
    result = done.wait()
    assert result.duration_ms == 1000 and not result.dropped and not result.error
    assert result.markers == {"item_agent": 200}
    audio = done.audio
    assert audio is not None and abs(len(audio) - 24_000) <= 24  # 1 s, left caller, right agent
    left, right = audio[:, 0], audio[:, 1]
    assert rms(left, 50, 950) > 4000
    assert rms(right, 20, 170) < 300  # nothing before the agent's audio was received
    assert rms(right, 250, 470) > 4000  # heard until the caller spoke
    assert rms(right, 540, 980) < 300  # cut at the barge-in, the late delta dropped


def test_a_truncate_cuts_the_item_where_the_client_stopped_playing():
    done = Done()
    capture = AudioCapture(input_format="audio/pcm", output_format="audio/pcm", on_done=done)
    capture.response_started(0)
    capture.mark("item_a", 0, agent=True)
    capture.agent_audio(delta(tone(800, 1000)), 0)
    for position in range(0, 1000, 20):
        capture.caller_audio(append(tone(20, 300)), position)
    capture.truncated("item_a", 300, 1000)  # the client played 300 ms of it
    capture.close()
    done.wait()
    right = done.audio[:, 1]
    assert rms(right, 50, 280) > 4000
    assert rms(right, 350, 950) < 300


def test_g711_both_ways_is_decoded_onto_the_24_khz_timeline():
    done = Done()
    capture = AudioCapture(input_format="audio/pcmu", output_format="audio/pcmu", on_done=done)
    ulaw_tone = bytes([0x80, 0xFF, 0x00, 0xFF] * 40)  # 20 ms at 8 kHz: a loud square wave
    for position in range(0, 500, 20):
        capture.caller_audio(append(ulaw_tone), position)
    capture.close()
    result = done.wait()
    assert result.duration_ms == 500
    assert rms(done.audio[:, 0], 50, 450) > 10_000


def test_a_full_queue_drops_the_recording_and_never_blocks(monkeypatch):
    release = threading.Event()
    original = capture_module.Timeline.apply

    def slow_apply(self, *entry):  # a writer stuck on a slow disk
        release.wait(10)
        original(self, *entry)

    monkeypatch.setattr(capture_module.Timeline, "apply", slow_apply)
    reasons = []
    done = Done()
    capture = AudioCapture(
        input_format="audio/pcm", output_format="audio/pcm", on_done=done, max_frames=3,
        on_dropped=reasons.append,
    )  # fmt: skip
    for position in range(0, 400, 20):  # returns at once although nothing is written
        capture.caller_audio(append(tone(20, 300)), position)
    assert capture.dropped and reasons == ["writer_behind"]
    release.set()
    capture.close()
    result = done.wait()
    assert result.path is None and "fell behind" in result.dropped


@pytest.mark.parametrize("audio_format", ["audio/pcmu", "audio/pcma"])
def test_g711_tables_match_the_standard(audio_format):
    table = capture_module._ULAW if audio_format == "audio/pcmu" else capture_module._ALAW
    silence, loudest = (0xFF, 0x80) if audio_format == "audio/pcmu" else (0xD5, 0xAA)
    assert abs(int(table[silence])) <= 8
    assert int(table[loudest]) in (32124, 32256)
