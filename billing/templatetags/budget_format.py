"""Template filters of the budget pages."""
from __future__ import annotations

from decimal import Decimal

from django import template

from catalog.money import display_usd

register = template.Library()


@register.filter
def usd(amount: Decimal | None) -> str:
    """Exact dollars without trailing zeros ("$0.0018")."""
    return display_usd(amount, exact=True)


@register.filter
def tokens(count: int | None) -> str:
    if count is None:
        return "–"
    return f"{count:,}"


@register.filter
def per_window(window: str) -> str:
    """"hourly", "daily", "monthly", "lifetime": how a limit's window reads after it."""
    return {"hour": "hourly", "day": "daily", "month": "monthly"}.get(window, window)
