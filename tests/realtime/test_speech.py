"""eSpeak NG synthesis, pocketsphinx recognition and the voice activity detector."""

from __future__ import annotations

import time

from agents.realtime import audio, speech


def test_synthesize_rates(utterance_pcm: bytes, utterance_text: str, monkeypatch) -> None:
    ms = audio.duration_ms(utterance_pcm)
    assert 1000 < ms < 3000
    # eSpeak's output for the same text varies by ~10 ms from one call to the next (and with
    # the voice used before), so both rates are made from one synthesis: what is checked is
    # the rate, not eSpeak's repeatability.
    native = speech._Espeak.synth
    spoken: dict[tuple, bytes] = {}

    def once(engine, text, voice, wpm):
        if (text, voice, wpm) not in spoken:
            spoken[text, voice, wpm] = native(engine, text, voice, wpm)
        return spoken[text, voice, wpm]

    monkeypatch.setattr(speech._Espeak, "synth", once)
    at_24k = speech.synthesize(utterance_text)
    at_8k = speech.synthesize(utterance_text, rate_hz=8000)
    assert 1000 < audio.duration_ms(at_24k) < 3000
    assert abs(len(at_8k) / 2 / 8 - audio.duration_ms(at_24k)) < 1  # same duration at 8 kHz


def test_transcribe_recognises_espeak(utterance_pcm: bytes, utterance_text: str) -> None:
    started = time.monotonic()
    text = speech.transcribe(utterance_pcm)
    elapsed = time.monotonic() - started
    assert text == utterance_text
    assert elapsed < 5
    assert speech.transcribe(audio.silence(500)) == ""


def test_vad_reports_start_and_stop(turn_pcm: bytes, utterance_pcm: bytes) -> None:
    vad = speech.VoiceActivityDetector(silence_duration_ms=500, prefix_padding_ms=300)
    events = []
    for i in range(0, len(turn_pcm), 960):
        events += vad.feed(turn_pcm[i : i + 960])
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    speech_ms = audio.duration_ms(utterance_pcm)
    assert 500 - 300 - 60 <= events[0].ms <= 500 - 300 + 100
    assert 500 + speech_ms + 500 - 300 <= events[1].ms <= 500 + speech_ms + 500 + 150
    assert events[1].ms % 20 == 0


def test_vad_silence_only_is_quiet() -> None:
    vad = speech.VoiceActivityDetector()
    assert vad.feed(audio.silence(2000)) == []
    assert not vad.in_speech
