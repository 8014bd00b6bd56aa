"""Seed the price book with the published prices (README, "Billing", lists the choices).

The figures are written out here, not imported, so that this migration keeps meaning what it
meant when it ran. ``billing.pricing.SEED_RATES`` holds the same figures.
"""

from datetime import date
from decimal import Decimal

from django.db import migrations

EFFECTIVE_FROM = date(2025, 1, 1)
GPT_REALTIME_2 = {
    "text_in": "4.00", "text_cached": "0.40", "text_out": "24.00",
    "audio_in": "32.00", "audio_cached": "0.40", "audio_out": "64.00",
    "image_in": "5.00", "image_cached": "0.50",
}  # fmt: skip
PRICES = {
    "gpt-realtime-2": (GPT_REALTIME_2, "Published GA prices"),
    "gpt-realtime": (GPT_REALTIME_2, "Previous model: priced as gpt-realtime-2 (seeds silent)"),
    "gpt-realtime-mini": (
        {
            "text_in": "0.60",
            "text_cached": "0.06",
            "text_out": "2.40",
            "audio_in": "0.60",
            "audio_cached": "0.06",
            "audio_out": "2.40",
            "image_in": "0.60",
            "image_cached": "0.06",
        },  # fmt: skip
        "Audio in/out published; text and image as audio, cached at a tenth (seeds silent)",
    ),
    "gpt-realtime-whisper": ({"per_minute": "0.017"}, "Published, per minute of audio"),
    "gpt-realtime-translate": ({"per_minute": "0.034"}, "Published, per minute of audio"),
}


def seed(apps, schema_editor):
    entry = apps.get_model("billing", "PriceBookEntry")
    for model, (rates, note) in PRICES.items():
        entry.objects.get_or_create(
            model=model,
            effective_from=EFFECTIVE_FROM,
            defaults={name: Decimal(value) for name, value in rates.items()} | {"note": note},
        )


def unseed(apps, schema_editor):
    entry = apps.get_model("billing", "PriceBookEntry")
    entry.objects.filter(effective_from=EFFECTIVE_FROM, model__in=list(PRICES)).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0002_price_book_plans_caps_tallies_invoices")]

    operations = [migrations.RunPython(seed, unseed)]
