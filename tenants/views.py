"""Dashboard pages for keys, members and the audit log (templates/tenants/)."""
from __future__ import annotations

from django.shortcuts import render

from tenants.access import OVERSEERS, org_view


@org_view(get=OVERSEERS)
def keys(request):
    return render(request, "placeholder.html", {"heading": "API keys", "section": "keys"})


@org_view(get=OVERSEERS)
def members(request):
    return render(request, "placeholder.html", {"heading": "Members", "section": "members"})


@org_view(get=OVERSEERS)
def audit_log(request):
    return render(request, "placeholder.html", {"heading": "Audit log", "section": "audit"})
