"""Exact sums of usage costs, shared by the dashboard's reads (billing/selectors.py)
and the usage rollups (billing/rollups.py).

PostgreSQL sums `numeric` exactly, but SQLite stores a DecimalField as a REAL and
sums floats (a thousand records of $0.1 do not add up to $100 there). So each
record's cost is turned into an integer number of pico-dollars (10^-12 USD) in SQL
and integers are summed: exact on both. A stored cost has at most 12 decimal places
(catalog.money.COST_FIELD), so on PostgreSQL the scaled value is an integer already;
on SQLite the REAL nearest to the cost, scaled and rounded, recovers it exactly while
the scaling error stays under half a pico-dollar, which holds for any one request
costing less than $2,000. An integer sum on SQLite overflows past 9.2e18 pico-dollars
(about $9.2 million in one sum), far beyond what one embedded installation records.
"""
from __future__ import annotations

from decimal import Decimal

from django.db.models import BigIntegerField, DecimalField, ExpressionWrapper, F, Value
from django.db.models.functions import Cast, Round

from catalog.money import COST_PLACES

PICOS_PER_USD = 10 ** COST_PLACES


def cost_picos(field: str = "cost_usd"):
    """One record's cost as an integer of 10^-12 dollars, computed in SQL."""
    scaled = ExpressionWrapper(F(field) * Value(PICOS_PER_USD), output_field=DecimalField())
    return Cast(Round(scaled), BigIntegerField())


def usd_from_picos(picos) -> Decimal:
    """An integer of pico-dollars (or None: no rows) as exact Decimal dollars."""
    return Decimal(int(picos or 0)).scaleb(-COST_PLACES)
