"""`{% load money %}` then `{{ amount|usd }}` (dollar amounts for people, catalog.money.display_usd) and
`{{ count|thousands }}` (integers with thousands separators: "12,345")."""
from django import template

from catalog.money import display_usd

register = template.Library()


@register.filter
def usd(amount):
    return display_usd(amount)


@register.filter
def thousands(value):
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    return f"{value:,}"
