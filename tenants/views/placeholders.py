"""Pages of the tenants app still to be built (templates/placeholder.html)."""
from __future__ import annotations

from django.shortcuts import render

from tenants.access import OVERSEERS, org_view


@org_view(get=OVERSEERS)
def audit_log(request):
    return render(request, "placeholder.html", {"heading": "Audit log", "section": "audit"})
