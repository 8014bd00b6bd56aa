"""Codecs, resampling and durations of agents.realtime.audio."""

from __future__ import annotations

import array
import math

from agents.realtime import audio


def _tone(n: int, rate: int = 24000, amp: int = 12000) -> bytes:
    return array.array(
        "h", (int(amp * math.sin(2 * math.pi * 440 * i / rate)) for i in range(n))
    ).tobytes()


def test_ulaw_known_values_and_round_trip() -> None:
    assert audio.ulaw_encode(array.array("h", [0]).tobytes()) == b"\xff"
    assert audio.ulaw_decode(b"\x00") == array.array("h", [-32124]).tobytes()
    assert audio.ulaw_decode(b"\x80") == array.array("h", [32124]).tobytes()
    codes = bytes(b for b in range(256) if b != 0x7F)  # 0x7F and 0xFF both decode to 0
    assert audio.ulaw_encode(audio.ulaw_decode(codes)) == codes
    assert audio.ulaw_encode(audio.ulaw_decode(b"\x7f")) == b"\xff"


def test_alaw_known_values_and_round_trip() -> None:
    assert audio.alaw_encode(array.array("h", [0]).tobytes()) == b"\xd5"
    assert audio.alaw_decode(b"\xd5") == array.array("h", [8]).tobytes()
    assert audio.alaw_decode(b"\x55") == array.array("h", [-8]).tobytes()
    codes = bytes(range(256))
    assert audio.alaw_encode(audio.alaw_decode(codes)) == codes


def test_g711_quantisation_error_is_small() -> None:
    pcm = _tone(800, 8000)
    src = array.array("h", pcm)
    for enc, dec in (
        (audio.ulaw_encode, audio.ulaw_decode),
        (audio.alaw_encode, audio.alaw_decode),
    ):
        coded = enc(pcm)
        assert len(coded) == 800
        back = array.array("h", dec(coded))
        assert len(back) == 800
        assert max(abs(a - b) for a, b in zip(src, back, strict=True)) <= 1024  # < 1/32 of FS


def test_resample_lengths() -> None:
    assert len(audio.resample(_tone(22050, 22050), 22050, 24000)) == 2 * 24000
    assert len(audio.resample(_tone(24000), 24000, 16000)) == 2 * 16000
    assert len(audio.resample(_tone(480), 24000, 16000)) == 2 * 320
    assert len(audio.resample(_tone(160, 8000), 8000, 24000)) == 2 * 480
    assert len(audio.resample(_tone(480), 24000, 8000)) == 2 * 160
    assert len(audio.resample(_tone(1001), 24000, 16000)) == 2 * 667
    assert audio.resampled_length(1001, 24000, 16000) == 667
    assert audio.resample(b"", 24000, 16000) == b""


def test_resample_values_are_interpolated() -> None:
    ramp = array.array("h", [0, 300, 600, 900]).tobytes()
    assert array.array("h", audio.resample(ramp, 8000, 24000)).tolist() == [
        0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 900, 900,
    ]  # fmt: skip
    assert array.array("h", audio.resample(ramp, 24000, 12000)).tolist() == [0, 600]


def test_stream_resampler_matches_one_shot() -> None:
    pcm = _tone(24000)
    one_shot = audio.resample(pcm, 24000, 16000)
    for chunk in (960, 1002, 4096):
        stream = audio.StreamResampler(24000, 16000)
        out = b"".join(stream.process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk))
        assert out == one_shot
    up = audio.StreamResampler(8000, 24000)
    out = b"".join(up.process(_tone(160, 8000)) for _ in range(10))
    # floor((N - 1) * dst / src) + 1 samples after N input samples
    assert len(out) // 2 == (1600 - 1) * 3 + 1


def test_durations() -> None:
    assert audio.duration_ms(bytes(4800), "audio/pcm") == 100.0
    assert audio.duration_ms(bytes(800), "audio/pcmu") == 100.0
    assert audio.duration_ms(bytes(160), "audio/pcma") == 20.0
    assert audio.duration_ms(bytes(960)) == 20.0
    assert audio.format_rate("audio/pcmu") == 8000
    assert len(audio.silence(20)) == 960
    assert len(audio.silence(20, 8000)) == 320


def test_format_codec_dispatch() -> None:
    pcm = _tone(160, 8000)
    for fmt in ("audio/pcm", "audio/pcmu", "audio/pcma"):
        encoded = audio.encode_from_pcm16(pcm, fmt)
        assert len(audio.decode_to_pcm16(encoded, fmt)) == len(pcm)
