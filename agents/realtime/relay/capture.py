"""Recording a session's audio off the audio path: a bounded queue and a writer thread.

The relay calls ``AudioCapture`` methods on the event loop; each only appends a small tuple to
a bounded queue and never waits, decodes or touches a disk. The process's writer thread takes
them in batches, in order, decodes the base64 (and G.711) and lays both sides on one timeline
(``Timeline``); at the end an encoder thread encodes the file (``encode_ogg_opus``) and hands
the result to ``on_done``, in that thread. If the writer falls behind and the queue fills, the
recording is dropped (``dropped`` says why) and the audio goes on: the relay never waits.

The timeline is the caller's: the microphone streams in real time, so the caller's track is
continuous and its length is the session's input audio. The agent's audio of a response starts
where it was received relative to that track and plays contiguously (it arrives faster than
real time, a client plays it in order); a barge-in (``speech_started`` or the client's
``conversation.item.truncate``) cuts what remained of it, as the caller heard it. The file ends
with the caller's track: what the agent had sent beyond was never heard.

Stereo, left the caller, right the agent: overlapping speech (a barge-in) stays audible on both
sides, and analysis can separate the speakers without diarisation.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agents.realtime import frames

logger = logging.getLogger(__name__)

CALLER, AGENT = "caller", "agent"
# Queue entries: (kind, payload, caller position in bytes of the caller's format at that time).
_CALLER_FRAME, _AGENT_FRAME, _RESPONSE, _BARGE_IN, _TRUNCATE, _MARK, _SPEECH, _FORMATS = range(8)

RATE = 24_000  # the file's sample rate: the realtime PCM rate; G.711 (8 kHz) is upsampled
SAMPLE_BYTES = 2
DEFAULT_QUEUE_FRAMES = 2000  # about 20 s of both sides at 20 ms frames


@dataclass
class Result:
    """What the writer produced: a file to store (``path``), or why there is none."""

    path: str | None
    duration_ms: int
    markers: dict[str, int] = field(default_factory=dict)
    mime: str = "audio/ogg"
    extension: str = "ogg"
    dropped: str = ""  # the reason the recording was dropped
    error: str = ""  # the reason it failed


def _format_of(value: Any, default: str) -> str:
    """``audio/pcm``, ``audio/pcmu`` or ``audio/pcma`` of a session's format value."""
    name = value.get("type") if isinstance(value, dict) else value
    legacy = {"pcm16": "audio/pcm", "g711_ulaw": "audio/pcmu", "g711_alaw": "audio/pcma"}
    name = legacy.get(name, name) if isinstance(name, str) else None
    return name if name in ("audio/pcm", "audio/pcmu", "audio/pcma") else default


class _Writer:
    """The process's one writer thread: every ``POLL_S`` it takes what each capture queued and
    lays it on that capture's timeline (a batch at a time: no thread wake-up per frame, no
    lock on the relay's side). Finished captures are encoded by a small pool, so that a long
    encode never holds up the other sessions' queues."""

    POLL_S = 0.1

    def __init__(self) -> None:
        self._captures: set[AudioCapture] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._encoders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="recording-encode")

    def add(self, capture: AudioCapture) -> None:
        with self._lock:
            self._captures.add(capture)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="recording-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.POLL_S)
            with self._lock:
                captures = list(self._captures)
            for capture in captures:
                try:
                    finished = capture._drain()
                except Exception:
                    logger.exception("recording writer failed")
                    capture._failed = "the recording writer failed"
                    finished = True
                if finished:
                    with self._lock:
                        self._captures.discard(capture)
                    self._encoders.submit(capture._finish)
                time.sleep(0)  # hand the GIL to the event loop between sessions' batches


_writer = _Writer()


class AudioCapture:
    """The relay's side: cheap, non-blocking calls. One per recorded session.

    Entries go on a ``deque`` (its ``append`` and ``popleft`` are atomic: no lock, no wake-up);
    its length bounds it (``max_frames``).
    """

    def __init__(
        self,
        *,
        input_format: str,
        output_format: str,
        on_done: Callable[[Result], None],
        max_frames: int = DEFAULT_QUEUE_FRAMES,
        spool_dir: str | None = None,
        on_dropped: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._queue: deque[tuple[int, Any, int]] = deque()
        self._max_frames = max_frames
        self.dropped = ""
        self._failed = ""
        self._on_dropped = on_dropped
        self._closed = False
        self._timeline = Timeline(input_format=input_format, output_format=output_format)
        self._on_done = on_done
        self._spool_dir = spool_dir
        self._done = threading.Event()
        _writer.add(self)

    # --- the relay's calls (event loop): never block ------------------------------------------

    def _put(self, entry: tuple[int, Any, int]) -> None:
        if self.dropped or self._closed:
            return
        if len(self._queue) >= self._max_frames:
            self.dropped = "the recording writer fell behind; recording stopped, audio went on"
            logger.warning("recording dropped: %s", self.dropped)
            self._on_dropped("writer_behind")
            return
        self._queue.append(entry)

    def caller_audio(self, frame: str, position_ms: float) -> None:
        """A client append frame as forwarded (its base64 audio is decoded by the writer)."""
        self._put((_CALLER_FRAME, frame, int(position_ms)))

    def agent_audio(self, frame: str, position_ms: float) -> None:
        """An upstream audio delta as relayed, received at ``position_ms`` of the caller's."""
        self._put((_AGENT_FRAME, frame, int(position_ms)))

    def response_started(self, position_ms: float) -> None:
        self._put((_RESPONSE, None, int(position_ms)))

    def speech_started(self, position_ms: float) -> None:
        """The caller started speaking: a barge-in if the agent was still being heard."""
        self._put((_SPEECH, None, int(position_ms)))

    def truncated(self, item_id: str, audio_end_ms: int, position_ms: float) -> None:
        """The client stopped playing ``item_id`` after ``audio_end_ms`` of it."""
        self._put((_TRUNCATE, (item_id, audio_end_ms), int(position_ms)))

    def mark(self, item_id: str, position_ms: float, *, agent: bool = False) -> None:
        """A transcript item starts here (``agent``: where its response's audio starts)."""
        self._put((_MARK, (item_id, agent), int(position_ms)))

    def formats(self, input_format: Any, output_format: Any) -> None:
        """The session's formats changed (``session.updated``)."""
        self._put((_FORMATS, (input_format, output_format), 0))

    def close(self) -> None:
        """No more audio: the writer encodes and calls ``on_done`` (in a thread of its own)."""
        self._closed = True

    def join(self, timeout: float | None = None) -> bool:
        """Wait until ``on_done`` has returned (tests, shutdown)."""
        return self._done.wait(timeout)

    # --- the writer's side (its threads) ------------------------------------------------------

    def _drain(self) -> bool:
        """Apply what is queued; True once the capture is finished (closed and drained, or
        dropped)."""
        closed = self._closed  # read first: entries queued before the close are all in
        queue, timeline = self._queue, self._timeline
        while queue:
            entry = queue.popleft()
            if not self.dropped:
                timeline.apply(*entry)
        if self.dropped:
            queue.clear()
            return True
        return closed

    def _finish(self) -> None:
        try:
            if self.dropped:
                result = Result(None, 0, dropped=self.dropped)
            elif self._failed:
                result = Result(None, 0, error=self._failed)
            else:
                result = self._timeline.finish(self._spool_dir)
        except Exception as error:
            logger.exception("recording failed")
            result = Result(None, 0, error=f"{type(error).__name__}: {error}")
        finally:
            self._timeline.discard()
        try:
            self._on_done(result)
        except Exception:
            logger.exception("storing a recording failed")
        finally:
            if result.path:
                with contextlib.suppress(OSError):
                    os.unlink(result.path)
            self._done.set()


class Timeline:
    """Both tracks as 16-bit PCM at ``RATE`` in two spool files (the agent's written at its
    position; the gaps are silence), then interleaved and encoded. Positions in milliseconds."""

    def __init__(self, *, input_format: str, output_format: str) -> None:
        self.input_format = _format_of(input_format, "audio/pcm")
        self.output_format = _format_of(output_format, "audio/pcm")
        self._caller = tempfile.TemporaryFile()  # noqa: SIM115 - closed in discard()
        self._agent = tempfile.TemporaryFile()  # noqa: SIM115
        self.caller_samples = 0
        self.agent_start = 0  # samples: where the current response's audio was placed
        self.agent_end = 0  # samples: the end of the agent's audio so far
        self._agent_written = 0  # samples: where the agent's spool file's position is
        self._response_open = False  # the next delta starts the response's audio
        self._cut = False  # a barge-in cut the current response: its later deltas are dropped
        self.markers: dict[str, int] = {}
        self._speech_at = 0
        self._pending_agent_marks: list[str] = []

    @staticmethod
    def _samples(ms: float) -> int:
        return int(ms * RATE / 1000)

    def apply(self, kind: int, payload: Any, position_ms: int) -> None:
        if kind == _CALLER_FRAME:
            pcm = _pcm(frames_audio(payload), self.input_format)
            self._caller.write(pcm)
            self.caller_samples += len(pcm) // SAMPLE_BYTES
        elif kind == _AGENT_FRAME:
            self._agent_audio(payload, position_ms)
        elif kind == _RESPONSE:
            self._response_open = True
            self._cut = False
        elif kind == _SPEECH:
            self._speech_at = position_ms
            self._cut_at(self._samples(position_ms))
        elif kind == _TRUNCATE:
            item_id, audio_end_ms = payload
            start = self.markers.get(item_id)
            if start is not None:
                self._cut_at(self._samples(start + audio_end_ms))
        elif kind == _MARK:
            item_id, agent = payload
            if item_id in self.markers or item_id in self._pending_agent_marks:
                return
            if agent and self._response_open:
                self._pending_agent_marks.append(item_id)  # placed with the first delta
            elif agent:
                self.markers[item_id] = round(self.agent_start * 1000 / RATE)
            else:
                self.markers[item_id] = min(position_ms, self._speech_at or position_ms)
        elif kind == _FORMATS:
            self.input_format = _format_of(payload[0], self.input_format)
            self.output_format = _format_of(payload[1], self.output_format)

    def _agent_audio(self, frame: str, position_ms: int) -> None:
        if self._cut:
            return
        pcm = _pcm(_delta_audio(frame), self.output_format)
        if not pcm:
            return
        if self._response_open or self.agent_end == 0:
            # The response's audio starts where it was received, not before the last one ends.
            self.agent_start = max(self._samples(position_ms), self.agent_end)
            self.agent_end = self.agent_start
            self._response_open = False
            for item_id in self._pending_agent_marks:
                self.markers[item_id] = round(self.agent_start * 1000 / RATE)
            self._pending_agent_marks.clear()
        if self._agent_written != self.agent_end:  # a gap (silence) or a cut before this
            self._agent.seek(self.agent_end * SAMPLE_BYTES)
        self._agent.write(pcm)
        self.agent_end += len(pcm) // SAMPLE_BYTES
        self._agent_written = self.agent_end

    def _cut_at(self, sample: int) -> None:
        """The caller interrupted at ``sample``: the agent's audio after it was not heard."""
        if self.agent_end > sample:
            self.agent_end = max(sample, 0)
            self._agent.truncate(self.agent_end * SAMPLE_BYTES)
            self._agent_written = -1  # seek before the next write
            self._cut = True
        elif self._response_open:
            self._cut = True  # the response had not started to play: none of it is heard

    def finish(self, spool_dir: str | None) -> Result:
        total = self.caller_samples
        duration_ms = round(total * 1000 / RATE)
        if total == 0:
            return Result(None, 0, error="no audio was received")
        fd, path = tempfile.mkstemp(suffix=".ogg", dir=spool_dir)
        os.close(fd)
        try:
            encode_ogg_opus(path, self._caller, self._agent, total)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return Result(path, duration_ms, dict(self.markers))

    def discard(self) -> None:
        self._caller.close()
        self._agent.close()


def _field_base64(frame: str, key: str) -> bytes:
    """The base64 string value of ``key`` in a Realtime frame, decoded.

    The frames come from the relay, which matched them as canonical (appends) or relays them as
    the upstream sent them (deltas): a string search finds the value without a JSON decode or a
    regular expression (base64 has no quote); anything unusual takes a full decode.
    """
    at = frame.find(f'"{key}"')
    if at >= 0:
        start = frame.find('"', frame.find(":", at + len(key) + 2)) + 1
        end = frame.find('"', start)
        if 0 < start < end:
            return base64.b64decode(frame[start:end])
    event = frames.loads_object(frame) or {}
    value = event.get(key)
    return base64.b64decode(value) if isinstance(value, str) else b""


def frames_audio(frame: str) -> bytes:
    """The audio of a client append frame (the canonical shape the relay forwards)."""
    return _field_base64(frame, "audio")


def _delta_audio(frame: str) -> bytes:
    return _field_base64(frame, "delta")


def _pcm(audio: bytes, audio_format: str) -> bytes:
    """16-bit PCM at ``RATE`` of audio in a session format (PCM16 24 kHz or G.711 8 kHz)."""
    import numpy as np

    if audio_format == "audio/pcm":
        return audio[: len(audio) - len(audio) % 2]
    table = _ULAW if audio_format == "audio/pcmu" else _ALAW
    decoded = table[np.frombuffer(audio, dtype=np.uint8)]
    return np.repeat(decoded, RATE // 8000).tobytes()  # 8 kHz → 24 kHz (sample and hold)


def _g711_tables() -> tuple[Any, Any]:
    """ITU-T G.711 μ-law and A-law expansion tables (256 entries each)."""
    import numpy as np

    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    exponent = (u >> 4) & 0x07
    ulaw = (((u & 0x0F) << 3) + 0x84) << exponent
    ulaw = np.where(u & 0x80, 0x84 - ulaw, ulaw - 0x84)
    a = codes ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    alaw = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    alaw = np.where(a & 0x80, alaw, -alaw)
    return ulaw.astype(np.int16), alaw.astype(np.int16)


_ULAW, _ALAW = _g711_tables()

CHUNK_SAMPLES = RATE * 5


def encode_ogg_opus(path: str, caller: Any, agent: Any, total: int) -> None:
    """Interleave the two spool files (left caller, right agent) into Ogg/Opus, in chunks."""
    import numpy as np
    import soundfile

    caller.seek(0)
    agent.seek(0)
    with soundfile.SoundFile(
        path, "w", samplerate=RATE, channels=2, format="OGG", subtype="OPUS"
    ) as out:
        done = 0
        while done < total:
            count = min(CHUNK_SAMPLES, total - done)
            left = np.frombuffer(caller.read(count * SAMPLE_BYTES), dtype=np.int16)
            right = np.frombuffer(agent.read(count * SAMPLE_BYTES), dtype=np.int16)
            block = np.zeros((count, 2), dtype=np.int16)
            block[: len(left), 0] = left
            block[: len(right), 1] = right
            out.write(block)
            done += count
            time.sleep(0)  # let the event loop's thread have the GIL between chunks
