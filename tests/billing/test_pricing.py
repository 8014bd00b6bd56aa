"""Cost rules against hand-computed figures, exact to the Decimal."""

import importlib
from datetime import date
from decimal import Decimal

import pytest

from billing import pricing
from billing.models import PriceBookEntry
from billing.pricing import PriceBook, PriceVersion, Rates, TokenCounts
from billing.selectors import price_book_load

GPT2 = pricing.SEED_RATES["gpt-realtime-2"]
MINI = pricing.SEED_RATES["gpt-realtime-mini"]
WHISPER = pricing.SEED_RATES["gpt-realtime-whisper"]
TRANSLATE = pricing.SEED_RATES["gpt-realtime-translate"]

# (name, counts, rates, expected): each figure worked out by hand in the comment.
CASES = [
    (
        # 6,000 uncached audio × $32 + 4,000 cached × $0.40 + 2,000 out × $64, per 1M
        # = 0.192 + 0.0016 + 0.128
        "cached audio, gpt-realtime-2",
        TokenCounts(input_audio=10_000, cached_audio=4_000, output_audio=2_000),
        GPT2,
        Decimal("0.3216"),
    ),
    (
        # text: 500 × 4 + 500 cached × 0.40 + 200 out × 24; audio: 3,000 × 32 + 1,500 out × 64
        # = 0.002 + 0.0002 + 0.0048 + 0.096 + 0.096
        "mixed modalities",
        TokenCounts(
            input_text=1_000,
            cached_text=500,
            input_audio=3_000,
            output_text=200,
            output_audio=1_500,
        ),  # fmt: skip
        GPT2,
        Decimal("0.199"),
    ),
    (
        # 1,000 image × $5 + 1,000 cached image × $0.50 + 100 text × $4 = 0.005 + 0.0005 + 0.0004
        "image input",
        TokenCounts(input_image=2_000, cached_image=1_000, input_text=100),
        GPT2,
        Decimal("0.0059"),
    ),
    (
        # 1M audio in × $32 + 1M audio out × $64
        "one million each way on gpt-realtime-2",
        TokenCounts(input_audio=1_000_000, output_audio=1_000_000),
        GPT2,
        Decimal("96"),
    ),
    (
        # the same on mini: 1M × $0.60 + 1M × $2.40
        "one million each way on gpt-realtime-mini",
        TokenCounts(input_audio=1_000_000, output_audio=1_000_000),
        MINI,
        Decimal("3"),
    ),
    (
        # mini, cached audio: 2,000 × 0.60 + 8,000 × 0.06 + 1,000 × 2.40 = 0.0012 + 0.00048 + 0.0024
        "cached audio, gpt-realtime-mini",
        TokenCounts(input_audio=10_000, cached_audio=8_000, output_audio=1_000),
        MINI,
        Decimal("0.00408"),
    ),
    (
        # 90 s of audio at $0.017 per minute = 1.5 × 0.017
        "whisper, 90 seconds",
        TokenCounts(audio_ms=90_000),
        WHISPER,
        Decimal("0.0255"),
    ),
    (
        # 30 minutes at $0.034 per minute
        "translate, 30 minutes",
        TokenCounts(audio_ms=1_800_000),
        TRANSLATE,
        Decimal("1.02"),
    ),
    (
        # the local engine costs nothing, whatever it reports
        "local engine",
        TokenCounts(input_audio=50_000, output_audio=50_000),
        pricing.LOCAL_ENGINE,
        Decimal("0"),
    ),
]


@pytest.mark.parametrize(("name", "counts", "rates", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cost_by_hand(name, counts, rates, expected):
    assert pricing.cost(counts, rates) == expected


@pytest.mark.parametrize(("name", "counts", "rates", "expected"), CASES, ids=[c[0] for c in CASES])
def test_line_quantities_add_up_to_the_same_cost(name, counts, rates, expected):
    quantities = pricing.billable_quantities(counts)
    total = sum(
        pricing.line_cost(token_type, quantities[token_type.code],
                          getattr(rates, token_type.rate_field))
        for token_type in pricing.TOKEN_TYPES
    )  # fmt: skip
    assert total == expected


def test_markup_and_discount():
    cost = Decimal("0.3216")
    assert pricing.with_markup(cost, Decimal("15")) == Decimal("0.36984")
    assert pricing.with_markup(cost, Decimal("-10")) == Decimal("0.28944")
    assert pricing.with_markup(cost, Decimal("0")) == cost


def test_rounding_rule_is_half_up_to_the_cent():
    assert pricing.cents(Decimal("0.125")) == Decimal("0.13")
    assert pricing.cents(Decimal("0.124999")) == Decimal("0.12")
    assert pricing.cents(Decimal("0.3216")) == Decimal("0.32")
    assert pricing.cents(Decimal("2.675")) == Decimal("2.68")  # a float would say 2.67


def test_price_book_versions_by_day():
    new = Rates(audio_in=Decimal("20"), audio_out=Decimal("40"))
    book = PriceBook([PriceVersion("gpt-realtime-2", date(2026, 10, 15), new)])
    assert book.rates_for(model="gpt-realtime-2", provider="openai", day=date(2026, 10, 14)) == GPT2
    assert book.rates_for(model="gpt-realtime-2", provider="openai", day=date(2026, 10, 15)) == new
    assert book.rates_for(model="gpt-realtime-2", provider="local", day=date(2026, 10, 15)) == (
        pricing.LOCAL_ENGINE
    )
    with pytest.raises(pricing.MissingPrice):
        book.rates_for(model="gpt-4o-realtime-preview", provider="openai", day=date(2026, 10, 1))


# The seed is a data migration, and transactional tests flush it (serialized rollback restored it
# only when the test's thread still held the connection the test database was serialized on,
# which a random order on PostgreSQL did not guarantee): the test runs the migrations' own seed
# functions on an empty price book, as `migrate` does on a new database.
@pytest.mark.django_db
def test_the_price_book_is_seeded_with_the_published_prices():
    from django.apps import apps

    PriceBookEntry.objects.all().delete()
    for name, function in (
        ("0003_seed_price_book", "seed"),
        ("0004_usage_kind_and_text_prices", "seed_text_prices"),
    ):
        getattr(importlib.import_module(f"billing.migrations.{name}"), function)(apps, None)
    entries = {entry.model: entry for entry in PriceBookEntry.objects.all()}
    assert set(entries) == set(pricing.SEED_RATES)
    for model, rates in pricing.SEED_RATES.items():
        assert entries[model].rates() == rates
        assert entries[model].effective_from == pricing.SEED_EFFECTIVE_FROM


@pytest.mark.django_db
def test_an_entry_added_in_the_admin_table_takes_over_from_its_day():
    PriceBookEntry.objects.create(
        model="gpt-realtime-2", effective_from=date(2026, 11, 1), audio_in=Decimal("30")
    )
    book = price_book_load()
    day = date(2026, 11, 2)
    assert book.rates_for(model="gpt-realtime-2", provider="openai", day=day).audio_in == 30
    assert book.rates_for(model="gpt-realtime-2", provider="openai", day=day).audio_out == 0
    assert book.rates_for(model="gpt-realtime-2", provider="openai", day=date(2026, 10, 31)) == GPT2
