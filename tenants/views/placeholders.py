"""Placeholder pages of the tenants app, until their own modules replace them."""
from __future__ import annotations

from django.shortcuts import render

from tenants.access import OVERSEERS, org_view


@org_view(get=OVERSEERS)
def keys(request):
    return render(request, "placeholder.html", {"heading": "API keys", "section": "keys"})


@org_view(get=OVERSEERS)
def members(request):
    return render(request, "placeholder.html", {"heading": "Members", "section": "members"})
