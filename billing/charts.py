"""Server-rendered inline SVG charts for the usage page: geometry only, drawn by the template."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from billing import figures, pricing

PALETTE = ("#4f46e5", "#0ea5e9", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#64748b")
WIDTH, HEIGHT, LEFT, BOTTOM = 720, 220, 48, 24


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    legend: list[tuple[str, str]]
    labels: list[tuple[float, float, str]]
    maximum: str


def _money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.0001'))}"


def cost_per_day(by_day: dict[date, dict[str, Decimal]], models: list[str]) -> Chart:
    """One bar per day, stacked by model."""
    colors = {model: PALETTE[index % len(PALETTE)] for index, model in enumerate(models)}
    days = sorted(by_day)
    highest = max((sum(costs.values(), Decimal(0)) for costs in by_day.values()), default=0)
    plot_height = HEIGHT - BOTTOM - 10
    slot = (WIDTH - LEFT) / max(len(days), 1)
    bars, labels = [], []
    for index, day in enumerate(days):
        x = LEFT + index * slot + slot * 0.15
        base = HEIGHT - BOTTOM
        for model in models:
            value = by_day[day].get(model, Decimal(0))
            if not value or not highest:
                continue
            height = float(value / highest) * plot_height
            base -= height
            title = f"{day:%Y-%m-%d} {model}: {_money(value)}"
            bars.append(Bar(x, base, slot * 0.7, height, colors[model], title))
        if len(days) <= 16 or index % max(len(days) // 8, 1) == 0:
            labels.append((x + slot * 0.35, HEIGHT - 6, f"{day:%d}"))
    legend = [(model, colors[model]) for model in models]
    return Chart(WIDTH, HEIGHT, bars, legend, labels, _money(Decimal(highest)))


def tokens_by_type(totals: dict[str, Decimal]) -> Chart:
    """One horizontal bar per token type (metered audio in seconds): billable quantities, so
    that an input bar excludes the cached tokens its own bar shows (labels say which)."""
    rows = [
        (token_type, totals.get(token_type.code, Decimal(0))) for token_type in pricing.TOKEN_TYPES
    ]
    highest = max((value for _, value in rows), default=Decimal(0))
    row_height, label_width = 22, 190
    height = row_height * len(rows) + 8
    bars, labels = [], []
    for index, (token_type, value) in enumerate(rows):
        y = 4 + index * row_height
        width = float(value / highest) * (WIDTH - label_width - 120) if highest else 0
        unit = "s" if token_type.unit == "seconds" else "tokens"
        bars.append(
            Bar(
                label_width,
                y,
                max(width, 1 if value else 0),
                row_height - 6,
                PALETTE[index % 7],
                f"{figures.quantity_label(token_type)}: {value.normalize():,f} {unit}",
            )  # fmt: skip
        )
        labels.append((label_width - 8, y + 12, figures.quantity_label(token_type)))
        labels.append((label_width + width + 6, y + 12, f"{value.normalize():,f} {unit}"))
    return Chart(WIDTH, height, bars, [], labels, "")


def values_per_day(values: dict[date, float], *, unit: str, color: str = PALETTE[0]) -> Chart:
    """One bar per day of a single series (sessions, minutes), drawn like ``cost_per_day``."""
    days = sorted(values)
    highest = max(values.values(), default=0)
    plot_height = HEIGHT - BOTTOM - 10
    slot = (WIDTH - LEFT) / max(len(days), 1)
    bars, labels = [], []
    for index, day in enumerate(days):
        x = LEFT + index * slot + slot * 0.15
        value = values[day]
        if value and highest:
            height = value / highest * plot_height
            title = f"{day:%Y-%m-%d}: {value:g} {unit}"
            bars.append(Bar(x, HEIGHT - BOTTOM - height, slot * 0.7, height, color, title))
        if len(days) <= 16 or index % max(len(days) // 8, 1) == 0:
            labels.append((x + slot * 0.35, HEIGHT - 6, f"{day:%d}"))
    return Chart(WIDTH, HEIGHT, bars, [], labels, f"{highest:g} {unit}")


def horizontal_bars(rows: list[tuple[str, float, str]]) -> Chart:
    """One horizontal bar per (label, value, value as text) row, drawn like ``tokens_by_type``."""
    highest = max((value for _, value, _ in rows), default=0)
    row_height, label_width = 22, 190
    height = row_height * len(rows) + 8
    bars, labels = [], []
    for index, (label, value, text) in enumerate(rows):
        y = 4 + index * row_height
        width = value / highest * (WIDTH - label_width - 120) if highest else 0
        bars.append(
            Bar(label_width, y, max(width, 1 if value else 0), row_height - 6,
                PALETTE[index % len(PALETTE)], f"{label}: {text}")
        )  # fmt: skip
        labels.append((label_width - 8, y + 12, label))
        labels.append((label_width + width + 6, y + 12, text))
    return Chart(WIDTH, height, bars, [], labels, "")
