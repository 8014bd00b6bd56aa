from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def plain(value: Decimal | None) -> str:
    """A Decimal without exponent or trailing zeros: 1000000, 0.017, 1800.5."""
    if value is None:
        return ""
    return f"{Decimal(value).normalize():f}"
