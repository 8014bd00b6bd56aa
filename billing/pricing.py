"""What usage costs, in ``Decimal`` US dollars, never float. Pure: no Django, no database.

Rates are per 1M tokens, or per minute for minute-metered models. The rates in force come from
the versioned price book (``billing.models.PriceBookEntry``, edited by staff in the admin, loaded
into a ``PriceBook``); ``SEED_RATES`` are the published prices the price book was seeded with
(see README, "Billing", for the choices made where the seeds are silent or disagree).

Cost rules: cached tokens are a subset of the input tokens of their modality; they are charged at
the cached rate and the rest of that input at the full rate. Text, audio and image each have
their own rates. Every response is billed, whatever its status. Minute-metered models bill the
audio streamed, to the millisecond. Nothing is rounded here: invoice lines round (``cents``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

MILLION = Decimal(1_000_000)
MS_PER_MINUTE = Decimal(60_000)
SECONDS_PER_MINUTE = Decimal(60)
CENT = Decimal("0.01")
PROVIDER_LOCAL = "local"


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


RATE_FIELDS = tuple(field.name for field in fields(Rates))


def _d(value: str) -> Decimal:
    return Decimal(value)


GPT_REALTIME_2 = Rates(
    text_in=_d("4.00"), text_cached=_d("0.40"), text_out=_d("24.00"),
    audio_in=_d("32.00"), audio_cached=_d("0.40"), audio_out=_d("64.00"),
    image_in=_d("5.00"), image_cached=_d("0.50"),
)  # fmt: skip
GPT_REALTIME_MINI = Rates(
    text_in=_d("0.60"), text_cached=_d("0.06"), text_out=_d("2.40"),
    audio_in=_d("0.60"), audio_cached=_d("0.06"), audio_out=_d("2.40"),
    image_in=_d("0.60"), image_cached=_d("0.06"),
)  # fmt: skip
# Text models of post-call analysis (published; migration 0004 holds the same figures).
TEXT_MODEL_RATES: dict[str, Rates] = {
    "gpt-5-mini": Rates(text_in=_d("0.25"), text_cached=_d("0.025"), text_out=_d("2.00")),
    "gpt-5-nano": Rates(text_in=_d("0.05"), text_cached=_d("0.005"), text_out=_d("0.40")),
    "gpt-5.4-mini": Rates(text_in=_d("0.75"), text_cached=_d("0.075"), text_out=_d("4.50")),
    "gpt-5.4-nano": Rates(text_in=_d("0.20"), text_cached=_d("0.02"), text_out=_d("1.25")),
}
# The published prices, as seeded into the price book (migrations 0003 and 0004 hold the same
# figures).
SEED_RATES: dict[str, Rates] = {
    "gpt-realtime-2": GPT_REALTIME_2,
    "gpt-realtime": GPT_REALTIME_2,  # the previous model: the seeds give no own price
    "gpt-realtime-mini": GPT_REALTIME_MINI,
    "gpt-realtime-whisper": Rates(per_minute=_d("0.017")),
    "gpt-realtime-translate": Rates(per_minute=_d("0.034")),
    **TEXT_MODEL_RATES,
}
SEED_EFFECTIVE_FROM = date(2025, 1, 1)
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


def with_markup(amount: Decimal, markup_percent: Decimal) -> Decimal:
    """The billed amount of a provider cost under a plan's markup (negative: a discount)."""
    return amount * (Decimal(100) + markup_percent) / Decimal(100)


def cents(amount: Decimal) -> Decimal:
    """The invoice rounding rule: half-up to the cent, applied once per invoice line."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


# --- invoice lines: one billable quantity per token type ---------------------------------


@dataclass(frozen=True)
class TokenType:
    code: str
    label: str
    rate_field: str
    unit: str  # the quantity's unit on an invoice line
    price_unit: str  # what the unit price is per

    @property
    def divisor(self) -> Decimal:
        return MILLION if self.unit == "tokens" else SECONDS_PER_MINUTE


TOKEN_TYPES: tuple[TokenType, ...] = (
    TokenType("text_in", "Text input", "text_in", "tokens", "1M tokens"),
    TokenType("text_cached", "Text input, cached", "text_cached", "tokens", "1M tokens"),
    TokenType("text_out", "Text output", "text_out", "tokens", "1M tokens"),
    TokenType("audio_in", "Audio input", "audio_in", "tokens", "1M tokens"),
    TokenType("audio_cached", "Audio input, cached", "audio_cached", "tokens", "1M tokens"),
    TokenType("audio_out", "Audio output", "audio_out", "tokens", "1M tokens"),
    TokenType("image_in", "Image input", "image_in", "tokens", "1M tokens"),
    TokenType("image_cached", "Image input, cached", "image_cached", "tokens", "1M tokens"),
    TokenType("audio_seconds", "Metered audio", "per_minute", "seconds", "minute"),
)
TOKEN_TYPES_BY_CODE = {token_type.code: token_type for token_type in TOKEN_TYPES}


def billable_quantities(counts: TokenCounts) -> dict[str, Decimal]:
    """Quantities per token type: uncached input apart from cached; audio in seconds (exact)."""
    return {
        "text_in": Decimal(max(counts.input_text - counts.cached_text, 0)),
        "text_cached": Decimal(counts.cached_text),
        "text_out": Decimal(counts.output_text),
        "audio_in": Decimal(max(counts.input_audio - counts.cached_audio, 0)),
        "audio_cached": Decimal(counts.cached_audio),
        "audio_out": Decimal(counts.output_audio),
        "image_in": Decimal(max(counts.input_image - counts.cached_image, 0)),
        "image_cached": Decimal(counts.cached_image),
        "audio_seconds": Decimal(counts.audio_ms) / Decimal(1000),
    }


def line_cost(token_type: TokenType, quantity: Decimal, unit_price: Decimal) -> Decimal:
    """Exact cost of a quantity of one token type (unrounded)."""
    return quantity * unit_price / token_type.divisor


# --- the versioned price book -------------------------------------------------------------


class MissingPrice(LookupError):
    """No price is known for a model on a day: it must not be billed as zero by accident."""


@dataclass(frozen=True)
class PriceVersion:
    model: str
    effective_from: date
    rates: Rates
    entry_id: int | None = None  # the price book row; None for the seeded published prices


class PriceBook:
    """Price versions by model; the one in force on a day has the latest ``effective_from``.

    The seeded published prices stand behind the stored entries as versions effective from the
    beginning of time, so that a known model is never priced at zero for lack of a row (an empty
    table after a test flush, or a day before the first stored entry). Staff override them by
    adding entries in the admin.
    """

    def __init__(self, versions: Iterable[PriceVersion], *, with_seed: bool = True) -> None:
        by_model: dict[str, dict[date, PriceVersion]] = {}
        if with_seed:
            for model, rates in SEED_RATES.items():
                by_model.setdefault(model, {})[date.min] = PriceVersion(model, date.min, rates)
        for version in versions:
            by_model.setdefault(version.model, {})[version.effective_from] = version
        self._versions = {
            model: sorted(days.values(), key=lambda version: version.effective_from)
            for model, days in by_model.items()
        }
        self._starts = {
            model: [version.effective_from for version in versions]
            for model, versions in self._versions.items()
        }

    def version_for(self, *, model: str, day: date) -> PriceVersion:
        starts = self._starts.get(model)
        if not starts:
            raise MissingPrice(f"no price for model {model!r}")
        index = bisect.bisect_right(starts, day) - 1
        if index < 0:
            raise MissingPrice(f"no price for model {model!r} on {day}")
        return self._versions[model][index]

    def rates_for(self, *, model: str, provider: str, day: date) -> Rates:
        """The rates of a usage record; the bundled local engine costs nothing."""
        if provider == PROVIDER_LOCAL:
            return LOCAL_ENGINE
        return self.version_for(model=model, day=day).rates

    def models(self) -> list[str]:
        return sorted(self._versions)
