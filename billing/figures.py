"""One meaning per figure: how the console, the exports and the API name money and tokens.

* Money shown to a tenant is the **billed amount**: usage priced by the price book in force on
  its (UTC) day, under the tenant plan's markup or discount; what the month's invoice bills
  (which then rounds each line half-up to the cent). **Provider cost** (the same usage at the
  price book's rates, no markup: the platform's own cost) is shown to platform staff only.
* Token figures follow the invoice: an input figure excludes cached tokens, and cached input is
  its own figure. (The Realtime API reports cached tokens as part of its input counts; the raw
  usage export keeps those counts and says so in its column names.)
"""

from __future__ import annotations

from decimal import Decimal

from billing import pricing

BILLED = "billed"
PROVIDER = "provider cost"
UNCACHED_INPUT_CODES = frozenset({"text_in", "audio_in", "image_in"})
CACHED_NOTE = (
    "Input figures exclude cached tokens; cached input is counted on its own "
    "(billed at the cached rate)."
)
BILLED_NOTE = (
    "Amounts are billed amounts: usage priced by the price book under your plan, as your "
    "invoice bills it (which rounds each line to the cent)."
)


def quantity_label(token_type: pricing.TokenType) -> str:
    """A token type as a console figure names it: input types say they exclude cached tokens."""
    if token_type.code in UNCACHED_INPUT_CODES:
        return f"{token_type.label}, uncached"
    return token_type.label


QUANTITY_LABELS = {
    token_type.code: quantity_label(token_type) for token_type in pricing.TOKEN_TYPES
}


def billed_amount(provider_cost: Decimal, *, markup_percent: Decimal) -> Decimal:
    """The billed amount of a provider cost (unrounded)."""
    return pricing.with_markup(provider_cost, markup_percent)


def provider_bound(billed: Decimal, *, markup_percent: Decimal) -> Decimal | None:
    """The provider cost whose billed amount is ``billed`` (to filter stored provider costs by
    a billed amount); None under a 100 % discount, where everything bills zero."""
    factor = Decimal(100) + markup_percent
    if factor <= 0:
        return None
    return billed * Decimal(100) / factor
