"""Speaking: synthesized audio cut into deltas, each with the words said in it, and the clock
that paces them in real time.

:func:`speech_chunks` is pure; :class:`Pacer` is the one place that waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import speech

OUTPUT_CHUNK_MS = 100
TRANSLATION_RATE = 24000
# eSpeak has these languages under another name.
_ESPEAK_LANGUAGE_ALIASES = {"zh": "cmn", "no": "nb"}
_translation_voices: dict[str, str] = {}


@dataclass(frozen=True)
class Chunk:
    text: str  # transcript delta ("" when no new word starts in this chunk)
    audio: bytes
    end_ms: float  # audio time at the end of this chunk


def speech_chunks(
    text: str, encoded: bytes, *, rate: int, sample_width: int, chunk_ms: int
) -> list[Chunk]:
    """Cut ``encoded`` audio into ``chunk_ms`` deltas and spread the words of ``text`` over
    them, text slightly ahead of its audio (the first chunk carries the first word, as at
    OpenAI the transcript delta precedes the audio)."""
    chunk_bytes = max(sample_width, rate * chunk_ms // 1000 * sample_width)
    pieces = [encoded[i : i + chunk_bytes] for i in range(0, len(encoded), chunk_bytes)]
    words = text.split(" ") if text else []
    out: list[Chunk] = []
    said = 0
    sent_bytes = 0
    for n, piece in enumerate(pieces, start=1):
        upto = -(-n * len(words) // len(pieces))
        delta = " ".join(words[said:upto])
        if delta and said:
            delta = " " + delta
        said = upto
        sent_bytes += len(piece)
        out.append(Chunk(delta, piece, sent_bytes / sample_width * 1000 / rate))
    return out


class Pacer:
    """Waits until audio time ``ms`` (since the pacer was made) is due in real time; unpaced,
    it only yields to the event loop."""

    def __init__(self, paced: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.paced = paced
        self.clock = clock
        self.started = clock()

    async def until(self, ms: float) -> None:
        if self.paced:
            await asyncio.sleep(max(0.0, self.started + ms / 1000 - self.clock()))
        else:
            await asyncio.sleep(0)


def _voice_candidates(language: str) -> list[str]:
    code = language.strip().lower().replace("_", "-")
    primary = code.split("-")[0]
    if primary == "en" or not primary:
        return [speech.DEFAULT_VOICE]
    names = [code, primary, _ESPEAK_LANGUAGE_ALIASES.get(primary, primary)]
    # "<voice>+<variant>": speech.espeak_voice passes such names through to eSpeak.
    return list(dict.fromkeys(f"{n}+m1" for n in names)) + [speech.DEFAULT_VOICE]


def synthesize_in_language(text: str, language: str, rate_hz: int = TRANSLATION_RATE) -> bytes:
    """Speak ``text`` with eSpeak's voice for ``language`` if it has one, else en-us
    (blocking; the voice found is cached per language)."""
    cached = _translation_voices.get(language)
    for voice in [cached] if cached else _voice_candidates(language):
        try:
            pcm = speech.synthesize(text, rate_hz=rate_hz, voice=voice)
        except ValueError:
            continue
        _translation_voices[language] = voice
        return pcm
    return speech.synthesize(text, rate_hz=rate_hz)
