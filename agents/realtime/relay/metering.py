"""Audio measured in the session's effective formats, and the real-time limiter.

The agent's stored format is only where a session starts: a client may switch it with
``session.update`` (SDKs switch to PCM 24 kHz), so the meter follows what the upstream says the
session now is (``session.created``/``session.updated``), not what was stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BYTES_PER_MS = {"audio/pcm": 48, "audio/pcmu": 8, "audio/pcma": 8}
# Beta names some clients still send.
_LEGACY = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
# A client more than this much audio ahead of real time (after the burst) is disconnected.
FLOOD_CLOSE_MS = 10_000
MINUTE_MS = 60_000

FORWARD, DROP, FLOOD = "forward", "drop", "flood"


def bytes_per_ms(audio_format: Any, default: int) -> int:
    """Bytes per millisecond of an ``audio.*.format`` value (object or legacy string)."""
    if isinstance(audio_format, dict):
        name: Any = audio_format.get("type")  # as sent: an unknown name gets the default
        rate = audio_format.get("rate")
        if name == "audio/pcm" and isinstance(rate, int) and rate > 0:
            return max(1, rate * 2 // 1000)
    else:
        name = audio_format
    if not isinstance(name, str):
        return default  # a shape no server sends: keep the format the meter has
    name = _LEGACY.get(name, name)
    return BYTES_PER_MS.get(name, default)


class AudioMeter:
    def __init__(
        self,
        *,
        input_bytes_per_ms: int,
        output_bytes_per_ms: int,
        burst_ms: int,
        clock: Callable[[], float],
    ) -> None:
        self.input_bytes_per_ms = input_bytes_per_ms
        self.output_bytes_per_ms = output_bytes_per_ms
        self._burst_ms = burst_ms
        self._clock = clock
        self._started_at = clock()
        self._in_ms = 0.0
        self._out_ms = 0.0
        self._excess_ms = 0.0
        self._metered_ms = 0

    @property
    def in_ms(self) -> int:
        return int(self._in_ms)

    @property
    def out_ms(self) -> int:
        return int(self._out_ms)

    def apply_session(self, session: Any) -> None:
        """Follow the formats of a ``session.created``/``session.updated`` session object."""
        if not isinstance(session, dict):
            return
        audio = session.get("audio")
        if not isinstance(audio, dict):
            return
        for direction, attribute in (
            ("input", "input_bytes_per_ms"),
            ("output", "output_bytes_per_ms"),
        ):
            part = audio.get(direction)
            if isinstance(part, dict) and part.get("format") is not None:
                setattr(self, attribute, bytes_per_ms(part["format"], getattr(self, attribute)))

    def admit(self, audio_bytes: int) -> str:
        """FORWARD (counted), DROP (ahead of real time), or FLOOD (far ahead: end the session)."""
        frame_ms = audio_bytes / self.input_bytes_per_ms
        allowed_ms = (self._clock() - self._started_at) * 1000 + self._burst_ms
        if self._in_ms + frame_ms > allowed_ms:
            self._excess_ms += frame_ms
            return FLOOD if self._excess_ms > FLOOD_CLOSE_MS else DROP
        self._in_ms += frame_ms
        return FORWARD

    def add_output(self, audio_bytes: int) -> None:
        self._out_ms += audio_bytes / self.output_bytes_per_ms

    def minute_due(self) -> bool:
        """A minute-metered session has streamed a minute since its last usage record."""
        return self._in_ms - self._metered_ms >= MINUTE_MS

    def take_span(self) -> tuple[int, int]:
        """(milliseconds not yet metered, total milliseconds) and mark them metered."""
        total = int(self._in_ms)
        span = total - self._metered_ms
        self._metered_ms = total
        return span, total
