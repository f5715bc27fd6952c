"""Placeholder pages of the billing app, until their own modules replace them."""
from __future__ import annotations

from django.shortcuts import render

from tenants.access import EVERYONE, OVERSEERS, org_view


@org_view(get=EVERYONE)
def overview(request):
    return render(request, "placeholder.html", {"heading": "Overview", "section": "overview"})


@org_view(get=OVERSEERS)
def budgets(request):
    return render(request, "placeholder.html", {"heading": "Budgets", "section": "budgets"})
