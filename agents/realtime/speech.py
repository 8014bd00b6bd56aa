"""Local speech stack: eSpeak NG synthesis, pocketsphinx recognition, voice activity detection.

Both engines ship their data inside their pip packages (``espeakng-loader`` and
``pocketsphinx``); nothing is downloaded. :func:`synthesize` and :func:`transcribe` are
blocking and CPU bound: call them from a worker thread (``asyncio.to_thread``), never on the
event loop. They are thread-safe (each engine is guarded by a lock and initialised once per
process). :class:`VoiceActivityDetector` is cheap (webrtcvad on 20 ms frames) and may run on
the loop.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import webrtcvad

from . import audio

ESPEAK_RATE = 22050
ASR_RATE = 16000
DEFAULT_VOICE = "en-us"
SILENCE_PEAK = 64  # peak sample below which audio counts as silence for recognition
DEFAULT_WPM = 175  # pocketsphinx recognises eSpeak's en-us voice best at its default speed

# --- eSpeak NG (ctypes) -----------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
_ESPEAK_RATE_PARAM = 1
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Espeak:
    """One process-wide eSpeak NG instance (the library is not thread-safe)."""

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _ESPEAK_INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self.rate = rate
        self._chunks: list[bytes] = []
        self._callback = _SynthCallback(self._on_audio)  # keep a reference alive
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self._voice: str | None = None

    def _on_audio(
        self, wav: ctypes._Pointer[ctypes.c_short], n_samples: int, _events: int | None
    ) -> int:  # the _SynthCallback signature: short *wav, int numsamples, espeak_EVENT *events
        if n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, n_samples * 2))
        return 0

    def synth(self, text: str, voice: str, wpm: int) -> bytes:
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"unknown eSpeak voice {voice!r}")
            self._voice = voice
        self._lib.espeak_SetParameter(_ESPEAK_RATE_PARAM, wpm, 0)
        self._chunks = []
        encoded = text.encode("utf-8")
        self._lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        pcm = b"".join(self._chunks)
        self._chunks = []
        return pcm


_espeak: _Espeak | None = None
_espeak_lock = threading.Lock()

# OpenAI voice names -> eSpeak variants (cosmetic; "en-us" is what pocketsphinx hears best).
VOICE_VARIANTS: dict[str, str] = {
    "marin": "en-us+f3",
    "cedar": "en-us+m3",
    "coral": "en-us+f2",
    "shimmer": "en-us+f4",
    "sage": "en-us+f1",
    "ash": "en-us+m2",
    "echo": "en-us+m1",
    "ballad": "en-us+m4",
    "verse": "en-us+m5",
}


def espeak_voice(voice: str | None) -> str:
    """Map an OpenAI voice name (or an eSpeak voice name) to an eSpeak voice."""
    if not voice:
        return DEFAULT_VOICE
    if voice in VOICE_VARIANTS:
        return VOICE_VARIANTS[voice]
    if voice[:2] == "en" or "+" in voice:
        return voice
    return DEFAULT_VOICE


def synthesize(
    text: str, *, rate_hz: int = 24000, voice: str = DEFAULT_VOICE, speed: float = 1.0
) -> bytes:
    """Speak ``text`` with eSpeak NG; returns PCM16 mono at ``rate_hz`` (blocking)."""
    global _espeak
    wpm = max(80, min(450, round(DEFAULT_WPM * speed)))
    with _espeak_lock:
        if _espeak is None:
            _espeak = _Espeak()
        pcm = _espeak.synth(text, espeak_voice(voice), wpm)
        native = _espeak.rate
    return audio.resample(pcm, native, rate_hz)


# --- pocketsphinx -------------------------------------------------------------------------

_decoder = None
_decoder_lock = threading.Lock()


def transcribe(pcm16: bytes, rate_hz: int = audio.PCM_RATE) -> str:
    """Recognise English speech in PCM16 mono at ``rate_hz`` (blocking; "" if nothing heard)."""
    global _decoder
    pcm = audio.resample(pcm16, rate_hz, ASR_RATE)
    samples = audio.pcm16_to_array(pcm)
    if not samples or max(max(samples), -min(samples)) < SILENCE_PEAK:
        return ""  # the recogniser "hears" words in digital silence
    # A little silence around the utterance helps the recogniser's endpointing.
    padded = audio.silence(200, ASR_RATE) + pcm + audio.silence(200, ASR_RATE)
    with _decoder_lock:
        if _decoder is None:
            from pocketsphinx import Decoder

            _decoder = Decoder(samprate=ASR_RATE, loglevel="FATAL")
        _decoder.start_utt()
        _decoder.process_raw(padded, full_utt=True)
        _decoder.end_utt()
        hyp = _decoder.hyp()
    return hyp.hypstr.strip() if hyp is not None else ""


def warm_up() -> None:
    """Load both engines now (e.g. at server start) instead of on first use."""
    synthesize("ok")
    transcribe(audio.silence(300))


# --- voice activity detection -------------------------------------------------------------


@dataclass(frozen=True)
class VadEvent:
    """``kind`` is "speech_started" (``ms`` = audio_start_ms, prefix padding included) or
    "speech_stopped" (``ms`` = audio_end_ms, silence duration included). ``ms`` counts from
    the first sample ever fed to the detector."""

    kind: str
    ms: int


class VoiceActivityDetector:
    """Incremental turn detector: webrtcvad on 20 ms frames of 16 kHz PCM16.

    Speech starts when 3 of the last 5 frames are voiced (reported at the first voiced frame
    minus ``prefix_padding_ms``, never below 0); it stops after ``silence_duration_ms`` of
    unvoiced frames (reported at the end of the last voiced frame plus the silence).
    ``threshold`` (0..1, like OpenAI's) picks webrtcvad's aggressiveness: higher = stricter.
    """

    FRAME_MS = 20
    _ONSET_WINDOW = 5
    _ONSET_VOICED = 3

    def __init__(
        self,
        *,
        input_rate: int = audio.PCM_RATE,
        threshold: float = 0.5,
        silence_duration_ms: int = 500,
        prefix_padding_ms: int = 300,
    ) -> None:
        mode = max(0, min(3, int(threshold * 4)))
        self._vad = webrtcvad.Vad(mode)
        self._resampler = audio.StreamResampler(input_rate, ASR_RATE)
        self.silence_duration_ms = silence_duration_ms
        self.prefix_padding_ms = prefix_padding_ms
        self._frame_bytes = ASR_RATE * self.FRAME_MS // 1000 * 2
        self._pending = b""
        self._frames = 0  # frames analysed so far
        self._recent: list[bool] = []
        self.in_speech = False
        self._last_voiced_end_ms = 0

    def feed(self, pcm16: bytes) -> list[VadEvent]:
        """Feed PCM16 at the input rate; returns the events the new audio completes."""
        events: list[VadEvent] = []
        data = self._pending + self._resampler.process(pcm16)
        fb = self._frame_bytes
        end = len(data) - len(data) % fb
        for off in range(0, end, fb):
            frame = data[off : off + fb]
            voiced = self._vad.is_speech(frame, ASR_RATE)
            start_ms = self._frames * self.FRAME_MS
            self._frames += 1
            if not self.in_speech:
                self._recent.append(voiced)
                if len(self._recent) > self._ONSET_WINDOW:
                    self._recent.pop(0)
                if sum(self._recent) >= self._ONSET_VOICED:
                    first = len(self._recent) - self._recent.index(True)
                    onset_ms = start_ms + self.FRAME_MS - first * self.FRAME_MS
                    self.in_speech = True
                    self._last_voiced_end_ms = start_ms + self.FRAME_MS
                    events.append(
                        VadEvent("speech_started", max(0, onset_ms - self.prefix_padding_ms))
                    )
            elif voiced:
                self._last_voiced_end_ms = start_ms + self.FRAME_MS
            elif start_ms + self.FRAME_MS - self._last_voiced_end_ms >= self.silence_duration_ms:
                self.in_speech = False
                self._recent = []
                events.append(
                    VadEvent("speech_stopped", self._last_voiced_end_ms + self.silence_duration_ms)
                )
        self._pending = data[end:]
        return events

    def reset(self) -> None:
        """Forget any speech in progress (e.g. after input_audio_buffer.clear)."""
        self.in_speech = False
        self._recent = []
