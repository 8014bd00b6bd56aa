"""Pure-Python audio helpers for the local realtime engine.

Formats follow the OpenAI Realtime API:

* ``audio/pcm``: 16-bit signed little-endian mono PCM at 24 kHz (2 bytes per sample);
* ``audio/pcmu``: G.711 mu-law, 8 kHz, 1 byte per sample;
* ``audio/pcma``: G.711 A-law, 8 kHz, 1 byte per sample.

Everything works on ``bytes`` and :mod:`array` (no numpy). Codecs are table based; the
resampler is linear interpolation, good enough for speech recognition and voice activity
detection, and cheap enough to run on every 20 ms frame.
"""

from __future__ import annotations

import array
import sys

PCM_RATE = 24000
G711_RATE = 8000
FORMAT_RATES: dict[str, int] = {
    "audio/pcm": PCM_RATE,
    "audio/pcmu": G711_RATE,
    "audio/pcma": G711_RATE,
}
FORMAT_SAMPLE_WIDTH: dict[str, int] = {"audio/pcm": 2, "audio/pcmu": 1, "audio/pcma": 1}

_BIG_ENDIAN = sys.byteorder == "big"


def pcm16_to_array(pcm: bytes) -> array.array[int]:
    """Little-endian PCM16 bytes -> ``array('h')`` (a trailing odd byte is dropped)."""
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - (len(pcm) % 2)])
    if _BIG_ENDIAN:  # pragma: no cover - little-endian hosts only in practice
        samples.byteswap()
    return samples


def array_to_pcm16(samples: array.array[int]) -> bytes:
    """``array('h')`` -> little-endian PCM16 bytes."""
    if _BIG_ENDIAN:  # pragma: no cover
        samples = array.array("h", samples)
        samples.byteswap()
    return samples.tobytes()


# --- G.711 -------------------------------------------------------------------------------

_ULAW_BIAS = 0x84


def _ulaw_encode_sample(sample: int) -> int:
    """Sun g711.c ``linear2ulaw`` on the 14-bit magnitude (same result as CPython's audioop)."""
    value = sample >> 2
    if value < 0:
        value = -value
        mask = 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + (_ULAW_BIAS >> 2)
    segment = 0
    while segment < 8 and value > (0x40 << segment) - 1:
        segment += 1
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _ulaw_decode_byte(byte: int) -> int:
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    sample = ((mantissa << 3) + _ULAW_BIAS) << exponent
    sample -= _ULAW_BIAS
    return -sample if sign else sample


def _alaw_encode_sample(sample: int) -> int:
    sign = 0x80 if sample >= 0 else 0
    if sample < 0:
        sample = -sample - 1 if sample > -32768 else 32767
    if sample < 256:
        value = sample >> 4
    else:
        exponent = 7
        mask = 0x4000
        while exponent > 1 and not sample & mask:
            exponent -= 1
            mask >>= 1
        value = (exponent << 4) | ((sample >> (exponent + 3)) & 0x0F)
    return (sign | value) ^ 0x55


def _alaw_decode_byte(byte: int) -> int:
    byte ^= 0x55
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    if exponent == 0:
        sample = (mantissa << 4) + 8
    else:
        sample = ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if sign else -sample


# Decode tables: 256 entries. Encode tables: indexed by the sample as unsigned 16-bit.
_ULAW_DECODE = array.array("h", [_ulaw_decode_byte(b) for b in range(256)])
_ALAW_DECODE = array.array("h", [_alaw_decode_byte(b) for b in range(256)])
_ULAW_ENCODE = bytes(_ulaw_encode_sample(s - 65536 if s >= 32768 else s) for s in range(65536))
_ALAW_ENCODE = bytes(_alaw_encode_sample(s - 65536 if s >= 32768 else s) for s in range(65536))


def _encode(pcm: bytes, table: bytes) -> bytes:
    samples = pcm16_to_array(pcm)
    unsigned = array.array("H")
    unsigned.frombytes(samples.tobytes())
    return bytes(map(table.__getitem__, unsigned))


def ulaw_encode(pcm: bytes) -> bytes:
    """PCM16 (any rate) -> G.711 mu-law bytes, one per sample."""
    return _encode(pcm, _ULAW_ENCODE)


def alaw_encode(pcm: bytes) -> bytes:
    """PCM16 (any rate) -> G.711 A-law bytes, one per sample."""
    return _encode(pcm, _ALAW_ENCODE)


def ulaw_decode(data: bytes) -> bytes:
    """G.711 mu-law bytes -> PCM16 little-endian, same rate."""
    return array_to_pcm16(array.array("h", map(_ULAW_DECODE.__getitem__, data)))


def alaw_decode(data: bytes) -> bytes:
    """G.711 A-law bytes -> PCM16 little-endian, same rate."""
    return array_to_pcm16(array.array("h", map(_ALAW_DECODE.__getitem__, data)))


# --- resampling --------------------------------------------------------------------------


def resampled_length(n_samples: int, src_rate: int, dst_rate: int) -> int:
    """Number of output samples :func:`resample` produces: ``n * dst // src``."""
    return n_samples * dst_rate // src_rate


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample PCM16 mono by linear interpolation (one shot).

    The output has exactly ``len(samples) * dst_rate // src_rate`` samples; output sample
    ``k`` sits at source position ``k * src_rate / dst_rate`` (held at the last sample past
    the end).
    """
    if src_rate == dst_rate:
        return pcm[: len(pcm) - (len(pcm) % 2)]
    src = pcm16_to_array(pcm)
    n = len(src)
    if n == 0:
        return b""
    out_n = n * dst_rate // src_rate
    last = n - 1
    out = array.array("h", bytes(2 * out_n))
    num = 0  # source position times dst_rate
    for k in range(out_n):
        j, rem = divmod(num, dst_rate)
        if j >= last:
            out[k] = src[last]
        elif rem == 0:
            out[k] = src[j]
        else:
            s0 = src[j]
            out[k] = s0 + (src[j + 1] - s0) * rem // dst_rate
        num += src_rate
    return array_to_pcm16(out)


class StreamResampler:
    """Stateful linear resampler for a stream of PCM16 chunks of any size.

    Output sample ``k`` sits at source position ``k * src / dst`` counted from the start of
    the stream, so chunk boundaries neither drop nor duplicate samples: after ``N`` input
    samples in total, ``floor((N - 1) * dst / src) + 1`` samples have come out.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._num = 0  # next output position (times dst_rate), relative to current chunk
        self._prev: int | None = None

    def process(self, pcm: bytes) -> bytes:
        """Feed a chunk, get the output samples it completes."""
        src = pcm16_to_array(pcm)
        n = len(src)
        if n == 0:
            return b""
        if self.src_rate == self.dst_rate:
            return array_to_pcm16(src)
        dst = self.dst_rate
        step = self.src_rate
        out = array.array("h")
        num = self._num
        limit = (n - 1) * dst
        prev = self._prev
        while num <= limit:
            if num < 0:  # between the previous chunk's last sample and src[0]
                frac = num + dst
                s0 = prev if prev is not None else src[0]
                out.append(s0 + (src[0] - s0) * frac // dst)
            else:
                j, rem = divmod(num, dst)
                s0 = src[j]
                out.append(s0 if rem == 0 else s0 + (src[j + 1] - s0) * rem // dst)
            num += step
        self._num = num - n * dst
        self._prev = src[-1]
        return array_to_pcm16(out)


# --- formats ----------------------------------------------------------------------------


def format_rate(fmt: str) -> int:
    """Sample rate of a Realtime audio format type (``audio/pcm`` -> 24000)."""
    return FORMAT_RATES[fmt]


def duration_ms(data: bytes, fmt: str = "audio/pcm") -> float:
    """Duration in milliseconds of ``data`` encoded in ``fmt`` (may be fractional)."""
    samples = len(data) // FORMAT_SAMPLE_WIDTH[fmt]
    return samples * 1000.0 / FORMAT_RATES[fmt]


def decode_to_pcm16(data: bytes, fmt: str) -> bytes:
    """Audio in a Realtime format -> PCM16 at that format's native rate."""
    if fmt == "audio/pcmu":
        return ulaw_decode(data)
    if fmt == "audio/pcma":
        return alaw_decode(data)
    if fmt == "audio/pcm":
        return data[: len(data) - (len(data) % 2)]
    raise ValueError(f"unsupported audio format {fmt!r}")


def encode_from_pcm16(pcm: bytes, fmt: str) -> bytes:
    """PCM16 at the format's native rate -> audio in a Realtime format."""
    if fmt == "audio/pcmu":
        return ulaw_encode(pcm)
    if fmt == "audio/pcma":
        return alaw_encode(pcm)
    if fmt == "audio/pcm":
        return pcm
    raise ValueError(f"unsupported audio format {fmt!r}")


def silence(ms: int, rate: int = PCM_RATE) -> bytes:
    """``ms`` milliseconds of PCM16 digital silence at ``rate``."""
    return bytes(2 * (rate * ms // 1000))
