"""All money arithmetic in one place.

Prices are Decimal USD per million tokens with at most 6 decimal places, token
counts are integers, so a cost (tokens x price / 10^6) has at most 12 decimal
places and is stored exactly (DecimalField with 12 places): no rounding, no
float, ever. litellm's own float cost is not used for billing.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

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


# --- Budgets ------------------------------------------------------------------------
#
# Budget counters (in the database and in Redis) hold integer nano-dollars: exact,
# atomic to add in a Lua script, and wide enough (int64) for budgets up to nine
# billion dollars. A cost (12 places) is rounded *up* to the nano-dollar when it
# is counted against a budget, so counters never under-state spend.
NANOS_PER_USD = 1_000_000_000
_NANO = Decimal(1).scaleb(-9)


def usd_to_nanos(amount: Decimal) -> int:
    """Round up to whole nano-dollars (for counting against a budget)."""
    if not isinstance(amount, Decimal):
        raise TypeError("amounts must be Decimal")
    return int((amount * NANOS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def nanos_to_usd(nanos: int) -> Decimal:
    return (Decimal(nanos) * _NANO).quantize(_NANO)


def scale_price(price: Decimal, multiplier: Decimal) -> Decimal:
    """A price times a rate-card multiplier, rounded half-up to the price precision
    (a millionth of a dollar per million tokens)."""
    return (price * multiplier).quantize(Decimal(1).scaleb(-PRICE_PLACES), rounding=ROUND_HALF_UP)


def price_per_mtok_from_per_token(value: float | int | str) -> Decimal:
    """litellm's price map gives float USD per token; its shortest decimal text is
    the price its authors wrote (1e-05 -> 10 per million)."""
    price = Decimal(str(value)) * PER_MILLION
    return price.quantize(Decimal(1).scaleb(-PRICE_PLACES), rounding=ROUND_HALF_UP).normalize() + 0


# --- Display ---------------------------------------------------------------------------
_CENT = Decimal("0.01")
_MICRO = Decimal("0.000001")


def display_usd(amount: Decimal | None, *, exact: bool = False) -> str:
    """A dollar amount for people: cents with thousands separators ("$1,234.57"); amounts
    under a cent keep six places ("$0.000042") so a cheap request never shows as $0.00.
    `exact`: every place the amount has, without trailing zeros ("$0.0018", "$1,234.5"),
    for limits people typed (budgets)."""
    if amount is None:
        return "—"
    if not isinstance(amount, Decimal):
        raise TypeError("amounts must be Decimal")
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if exact:
        whole, _, places = format_usd(amount).partition(".")
        return f"{sign}${int(whole):,}" + (f".{places}" if places else "")
    if amount == 0:
        return "$0.00"
    if amount < _CENT:
        if amount < _MICRO:
            return f"{sign}<$0.000001"
        text = format(amount.quantize(_MICRO, rounding=ROUND_HALF_UP), "f").rstrip("0")
        return f"{sign}${text}"
    return f"{sign}${amount.quantize(_CENT, rounding=ROUND_HALF_UP):,}"


# --- Invoices ----------------------------------------------------------------------------
# Costs are exact to 10^-12 USD; an invoice asks for cents. Each billed line of a billing
# report is rounded once, here, and the report's total is the sum of its rounded lines,
# so the lines printed add up to the total printed (docs/billing.md "Rounding").
PICOS_PER_USD = 10 ** COST_PLACES


def invoice_amount(picos: int) -> Decimal:
    """An exact amount of pico-dollars as dollars and cents, rounded half-up (a half cent
    goes away from zero, for negative adjustments too)."""
    if isinstance(picos, bool) or not isinstance(picos, int):
        raise TypeError("amounts to invoice must be integer pico-dollars")
    return Decimal(picos).scaleb(-COST_PLACES).quantize(_CENT, rounding=ROUND_HALF_UP)
