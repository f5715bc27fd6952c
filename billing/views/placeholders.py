"""Billing pages not built yet (each is replaced by its own module)."""
from __future__ import annotations

from django.shortcuts import render

from tenants.access import EVERYONE, OVERSEERS, org_view


@org_view(get=EVERYONE)
def overview(request):
    return render(request, "placeholder.html", {"heading": "Overview", "section": "overview"})


@org_view(get=OVERSEERS)
def requests(request):
    return render(request, "placeholder.html", {"heading": "Request log", "section": "requests"})
