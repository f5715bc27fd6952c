"""All money arithmetic in one place.

Prices are Decimal USD per million tokens with at most 6 decimal places, token
counts are integers, so a cost (tokens x price / 10^6) has at most 12 decimal
places and is stored exactly (DecimalField with 12 places): no rounding, no
float, ever. litellm's own float cost is not used for billing.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

PER_MILLION = Decimal(1_000_000)
PRICE_PLACES = 6
COST_PLACES = 12
_COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
ZERO = Decimal(0)

# DecimalField options for stored costs: up to a trillion dollars, exact to 1e-12.
COST_FIELD = dict(max_digits=12 + COST_PLACES, decimal_places=COST_PLACES)


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, as applied to one request (kept with its usage)."""

    input_per_mtok: Decimal
    output_per_mtok: Decimal

    def __post_init__(self):
        for value in (self.input_per_mtok, self.output_per_mtok):
            if not isinstance(value, Decimal):
                raise TypeError("prices must be Decimal")
            if value < 0 or value.as_tuple().exponent < -PRICE_PLACES:
                raise ValueError(f"price {value} must be non-negative with at most {PRICE_PLACES} decimal places")


def request_cost(prices: Prices, *, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The exact cost of one request."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts cannot be negative")
    total = (prices.input_per_mtok * prompt_tokens + prices.output_per_mtok * completion_tokens) / PER_MILLION
    exact = total.quantize(_COST_QUANTUM)
    assert exact == total, "cost lost precision"  # impossible with the place limits above
    return exact


def format_usd(amount: Decimal) -> str:
    """A decimal string for the wire: exact, without exponent or trailing zeros ("0.00042", "0")."""
    text = format(amount.quantize(_COST_QUANTUM), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"
