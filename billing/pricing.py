"""What usage costs, in ``Decimal`` US dollars, never float.

Rates per 1M tokens (or per minute for minute-metered models) from the seeds, see README's
"Prices" section for the choices made where the seeds are silent or disagree. Cached tokens
are a subset of input tokens: they are charged at the cached rate and the rest of the input at
the full rate. Costs are not rounded here; invoices round their lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MILLION = Decimal(1_000_000)
MS_PER_MINUTE = Decimal(60_000)


@dataclass(frozen=True)
class Rates:
    text_in: Decimal = Decimal(0)
    text_cached: Decimal = Decimal(0)
    text_out: Decimal = Decimal(0)
    audio_in: Decimal = Decimal(0)
    audio_cached: Decimal = Decimal(0)
    audio_out: Decimal = Decimal(0)
    image_in: Decimal = Decimal(0)
    image_cached: Decimal = Decimal(0)
    per_minute: Decimal = Decimal(0)


def _d(value: str) -> Decimal:
    return Decimal(value)


GPT_REALTIME_2 = Rates(
    text_in=_d("4.00"), text_cached=_d("0.40"), text_out=_d("24.00"),
    audio_in=_d("32.00"), audio_cached=_d("0.40"), audio_out=_d("64.00"),
    image_in=_d("5.00"), image_cached=_d("0.50"),
)  # fmt: skip
DEFAULT_RATES: dict[str, Rates] = {
    "gpt-realtime-2": GPT_REALTIME_2,
    "gpt-realtime": GPT_REALTIME_2,
    "gpt-realtime-mini": Rates(
        text_in=_d("0.60"),
        text_cached=_d("0.06"),
        text_out=_d("2.40"),
        audio_in=_d("0.60"),
        audio_cached=_d("0.06"),
        audio_out=_d("2.40"),
        image_in=_d("0.60"),
        image_cached=_d("0.06"),
    ),  # fmt: skip
    "gpt-realtime-whisper": Rates(per_minute=_d("0.017")),
    "gpt-realtime-translate": Rates(per_minute=_d("0.034")),
}
LOCAL_ENGINE = Rates()


@dataclass(frozen=True)
class TokenCounts:
    input_text: int = 0
    input_audio: int = 0
    input_image: int = 0
    cached_text: int = 0
    cached_audio: int = 0
    cached_image: int = 0
    output_text: int = 0
    output_audio: int = 0
    audio_ms: int = 0


def cost(counts: TokenCounts, rates: Rates) -> Decimal:
    """Exact cost of one usage record (no rounding)."""
    uncached_text = max(counts.input_text - counts.cached_text, 0)
    uncached_audio = max(counts.input_audio - counts.cached_audio, 0)
    uncached_image = max(counts.input_image - counts.cached_image, 0)
    token_cost = (
        uncached_text * rates.text_in
        + counts.cached_text * rates.text_cached
        + uncached_audio * rates.audio_in
        + counts.cached_audio * rates.audio_cached
        + uncached_image * rates.image_in
        + counts.cached_image * rates.image_cached
        + counts.output_text * rates.text_out
        + counts.output_audio * rates.audio_out
    ) / MILLION
    return token_cost + Decimal(counts.audio_ms) * rates.per_minute / MS_PER_MINUTE
