from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def plain(value: Decimal | None) -> str:
    """A Decimal without exponent or trailing zeros: 1000000, 0.017, 1800.5."""
    if value is None:
        return ""
    return f"{Decimal(value).normalize():f}"


@register.filter
def money(value: Decimal | None, style: str = "symbol") -> str:
    """A billed amount as the tenant chose to see it: ``$1,234.50`` or ``USD 1,234.50``."""
    from billing.invoicing import money as format_money

    return "" if value is None else format_money(Decimal(value), style)
