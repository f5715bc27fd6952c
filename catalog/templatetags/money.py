"""`{% load money %}` then `{{ amount|usd }}`: dollar amounts for people (catalog.money.display_usd)."""
from django import template

from catalog.money import display_usd

register = template.Library()


@register.filter
def usd(amount):
    return display_usd(amount)
