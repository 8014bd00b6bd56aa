"""Translation sessions: the SDK's translation protocol, as its own session.

Client: ``session.update``, ``session.input_audio_buffer.append``, ``session.close``; server:
``session.created``, ``session.updated``, ``session.input_transcript.delta`` (only when
``audio.input.transcription`` is configured), ``session.output_transcript.delta``,
``session.output_audio.delta``, ``session.closed``, ``error``. Input is 24 kHz PCM16; utterances
are found by the VAD and recognised by pocketsphinx; the output is a *placeholder translation:
the local engine does not translate* -- the English source marked with the target language
(``[fr] what is ...``), spoken by eSpeak's voice for that language if it has one (else en-us).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from typing import Any

from .. import speech
from . import config as session_config
from .input_audio import InputAudio, SpeechStarted, decode_audio
from .shell import EngineShell
from .speaking import (
    OUTPUT_CHUNK_MS,
    TRANSLATION_RATE,
    Chunk,
    Pacer,
    speech_chunks,
    synthesize_in_language,
)

TRANSLATION_FRAME_MS = 200  # elapsed_ms advances in 200 ms translation frames
DEFAULT_TRANSLATION_MODEL = "gpt-realtime-translate"


def translation_placeholder(language: str, text: str) -> str:
    """Placeholder translation: the local engine does not translate; it marks the source
    text with the target language, e.g. ``[fr] what is the status of my order``."""
    return f"[{language}] {text}"


class TranslationSession(EngineShell):
    handlers = {
        "session.update": "_on_update",
        "session.input_audio_buffer.append": "_on_append",
        "session.close": "_on_close",
    }

    def __init__(
        self,
        model: str = DEFAULT_TRANSLATION_MODEL,
        *,
        max_session_seconds: float = 3600.0,
        realtime_pacing: bool = False,
        output_chunk_ms: int = OUTPUT_CHUNK_MS,
    ) -> None:
        super().__init__(max_session_seconds=max_session_seconds, realtime_pacing=realtime_pacing)
        self.model = model
        self.output_chunk_ms = output_chunk_ms
        self.config = session_config.initial_config(
            "translation", self.session_id, model, self.expires_at
        )
        detector = session_config.turn_detector(
            session_config.translation_turn_detection(), TRANSLATION_RATE
        )
        self.input = InputAudio(TRANSLATION_RATE, detector)
        self._speaking: asyncio.Task[None] | None = None  # the last utterance's output
        self._said_input = False  # a source transcript delta was sent
        self._said_output = False  # a translated transcript delta was sent

    def background_tasks(self) -> list[asyncio.Task[None] | None]:
        return [self._speaking]

    async def _on_update(self, event: dict[str, Any]) -> None:
        self.config = session_config.translation_update(self.config, event)
        self.emit({"type": "session.updated", "session": self.config})

    async def _on_append(self, event: dict[str, Any]) -> None:
        pcm = decode_audio(event.get("audio"), "audio/pcm")
        for found in self.input.append(pcm):
            if not isinstance(found, SpeechStarted):
                await self._translate(found.pcm, found.ms)

    async def _on_close(self, event: dict[str, Any]) -> None:
        """Flush the utterance in progress, finish the pending output, then close 1000."""
        pcm = self.input.flush_speech()
        if pcm is not None:
            await self._translate(pcm, self.input.appended_ms)
        if self._speaking is not None:
            with contextlib.suppress(Exception):
                await self._speaking
        self.emit({"type": "session.closed"})
        await self.close(1000, "session closed")

    async def _translate(self, pcm: bytes, end_ms: float) -> None:
        """Recognise one utterance; queue its (placeholder) translation for output."""
        transcript = await asyncio.to_thread(speech.transcribe, pcm, TRANSLATION_RATE)
        if not transcript.strip():
            return
        elapsed = int(end_ms) // TRANSLATION_FRAME_MS * TRANSLATION_FRAME_MS
        if self.config["audio"]["input"].get("transcription"):
            for word in transcript.split():
                delta = " " + word if self._said_input else word
                self.emit(
                    {
                        "type": "session.input_transcript.delta",
                        "delta": delta,
                        "elapsed_ms": elapsed,
                    }
                )
                self._said_input = True
        language = (self.config["audio"].get("output") or {}).get("language") or "en"
        self._speaking = asyncio.create_task(
            self._speak(self._speaking, transcript, language, elapsed),
            name=f"translation-{self.session_id}",
        )

    async def _speak(
        self, previous: asyncio.Task[None] | None, transcript: str, language: str, elapsed: int
    ) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        text = translation_placeholder(language, transcript)
        pcm = await asyncio.to_thread(synthesize_in_language, transcript, language)
        chunks = speech_chunks(
            text, pcm, rate=TRANSLATION_RATE, sample_width=2, chunk_ms=self.output_chunk_ms
        ) or [Chunk(text, b"", 0.0)]
        pacer = Pacer(self.realtime_pacing)
        for n, chunk in enumerate(chunks, start=1):
            if chunk.text:
                delta = " " + chunk.text.lstrip(" ") if self._said_output else chunk.text
                self.emit(
                    {
                        "type": "session.output_transcript.delta",
                        "delta": delta,
                        "elapsed_ms": elapsed,
                    }
                )
                self._said_output = True
            if chunk.audio:
                self.emit(
                    {
                        "type": "session.output_audio.delta",
                        "delta": base64.b64encode(chunk.audio).decode(),
                        "format": "pcm16",
                        "sample_rate": TRANSLATION_RATE,
                        "channels": 1,
                        "elapsed_ms": elapsed,
                    }
                )
            await pacer.until(n * self.output_chunk_ms)
