"""The ledger says what usage was for (``kind``), and the price book prices analysis models.

Existing rows are realtime responses (the default), except metered audio: minute-metered
models (transcribe, translate) carry ``audio_ms`` and no tokens, which is how they are told
apart here. The text models' figures are written out (as in 0003), the published prices per
1M tokens; ``billing.pricing.TEXT_MODEL_RATES`` holds the same.
"""

from datetime import date
from decimal import Decimal

from django.db import migrations, models

EFFECTIVE_FROM = date(2025, 1, 1)
TOKEN_FIELDS = (
    "input_text_tokens", "input_audio_tokens", "input_image_tokens",
    "output_text_tokens", "output_audio_tokens",
)  # fmt: skip
TEXT_PRICES = {
    "gpt-5-mini": ("0.25", "0.025", "2.00"),
    "gpt-5-nano": ("0.05", "0.005", "0.40"),
    "gpt-5.4-mini": ("0.75", "0.075", "4.50"),
    "gpt-5.4-nano": ("0.20", "0.02", "1.25"),
}


def backfill_kind(apps, schema_editor):
    event = apps.get_model("billing", "UsageEvent")
    event.objects.filter(audio_ms__gt=0, **{name: 0 for name in TOKEN_FIELDS}).update(
        kind="minutes"
    )


def seed_text_prices(apps, schema_editor):
    entry = apps.get_model("billing", "PriceBookEntry")
    for model, (text_in, text_cached, text_out) in TEXT_PRICES.items():
        entry.objects.get_or_create(
            model=model,
            effective_from=EFFECTIVE_FROM,
            defaults={
                "text_in": Decimal(text_in),
                "text_cached": Decimal(text_cached),
                "text_out": Decimal(text_out),
                "note": "Published text model prices (post-call analysis)",
            },
        )


def unseed_text_prices(apps, schema_editor):
    entry = apps.get_model("billing", "PriceBookEntry")
    entry.objects.filter(effective_from=EFFECTIVE_FROM, model__in=list(TEXT_PRICES)).delete()


class Migration(migrations.Migration):
    dependencies = [("billing", "0003_seed_price_book")]

    operations = [
        migrations.AddField(
            model_name="usageevent",
            name="kind",
            field=models.CharField(
                choices=[
                    ("realtime", "Realtime"),
                    ("minutes", "Metered audio"),
                    ("analysis", "Post-call analysis"),
                ],
                default="realtime",
                max_length=10,
            ),
        ),
        migrations.RunPython(backfill_kind, migrations.RunPython.noop),
        migrations.RunPython(seed_text_prices, unseed_text_prices),
    ]
