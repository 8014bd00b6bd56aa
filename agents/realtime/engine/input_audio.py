"""Input audio: the buffer of appended audio and the turn detector that watches it.

No I/O: :meth:`InputAudio.append` takes decoded PCM16 and returns the turn events it caused,
with the audio of each finished turn; the session shell turns them into server events.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from .. import audio, speech
from ..protocol import MIN_COMMIT_MS, ProtocolError

IDLE_KEEP_MS = 2000  # while nobody speaks, keep this much audio (prefix padding needs some)


@dataclass(frozen=True)
class SpeechStarted:
    ms: int  # session audio time


@dataclass(frozen=True)
class SpeechStopped:
    ms: int
    pcm: bytes  # the turn: from its start (with prefix padding) to here


def decode_audio(data: Any, fmt: str, param: str = "audio") -> bytes:
    """Base64 audio in ``fmt`` -> PCM16 at the format's own rate."""
    if not isinstance(data, str):
        raise ProtocolError(
            "missing_required_parameter", f"Missing required parameter: '{param}'.", param=param
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            "invalid_value", f"Invalid '{param}': expected base64-encoded audio bytes.", param=param
        ) from None
    return audio.decode_to_pcm16(raw, fmt)


class InputAudio:
    """PCM16 at ``rate`` Hz, timed in session milliseconds (all audio ever appended)."""

    def __init__(self, rate: int, detector: speech.VoiceActivityDetector | None) -> None:
        self.rate = rate
        self.detector = detector
        self.buffer = bytearray()
        self.origin_ms = 0.0  # session time of the buffer's first sample
        self.appended_ms = 0.0
        self.turn_start_ms = 0.0
        self._detector_offset_ms = 0.0  # a detector's clock starts when it is made

    def reconfigure(
        self, rate: int, detector: speech.VoiceActivityDetector | None, *, new_format: bool
    ) -> None:
        """A new turn detection (a new detector) or format (the buffer is dropped too)."""
        if new_format:
            self.rate = rate
            self.buffer.clear()
            self.origin_ms = self.appended_ms
        self.detector = detector
        self._detector_offset_ms = self.appended_ms

    def ms(self, pcm: bytes | bytearray) -> float:
        return len(pcm) / 2 * 1000 / self.rate

    @property
    def in_speech(self) -> bool:
        return self.detector is not None and self.detector.in_speech

    def append(self, pcm: bytes) -> list[SpeechStarted | SpeechStopped]:
        self.buffer += pcm
        self.appended_ms += self.ms(pcm)
        if self.detector is None:
            return []
        events: list[SpeechStarted | SpeechStopped] = []
        for found in self.detector.feed(pcm):
            at_ms = found.ms + self._detector_offset_ms
            if found.kind == "speech_started":
                self.turn_start_ms = int(at_ms)
                events.append(SpeechStarted(int(at_ms)))
            else:
                events.append(SpeechStopped(int(at_ms), self._take(self.turn_start_ms, at_ms)))
        if not self.detector.in_speech:
            excess = self.ms(self.buffer) - IDLE_KEEP_MS
            if excess > 0:
                self._take(self.origin_ms, self.origin_ms + excess)
        return events

    def commit(self) -> bytes:
        """The whole buffer as one turn (``input_audio_buffer.commit``)."""
        ms = self.ms(self.buffer)
        if ms < MIN_COMMIT_MS:
            raise ProtocolError(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"{MIN_COMMIT_MS}ms of audio, but buffer only has {ms:.2f}ms of audio.",
            )
        return self.clear()

    def clear(self) -> bytes:
        pcm = bytes(self.buffer)
        self.buffer.clear()
        self.origin_ms = self.appended_ms
        if self.detector is not None:
            self.detector.reset()
        return pcm

    def flush_speech(self) -> bytes | None:
        """The turn in progress, if someone is speaking (a translation session closing)."""
        if not self.in_speech:
            return None
        assert self.detector is not None
        self.detector.reset()
        return self._take(self.turn_start_ms, self.appended_ms)

    def _take(self, start_ms: float, end_ms: float) -> bytes:
        """Take session time [start, end) out of the buffer; keep what follows ``end``."""
        start = max(0, int(round((start_ms - self.origin_ms) * self.rate / 1000))) * 2
        end = max(0, int(round((end_ms - self.origin_ms) * self.rate / 1000))) * 2
        end = min(end, len(self.buffer))
        chunk = bytes(self.buffer[start:end])
        del self.buffer[:end]
        self.origin_ms += end / 2 * 1000 / self.rate
        return chunk
