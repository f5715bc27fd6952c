"""The playground page (templates/gateway/playground.html)."""
from __future__ import annotations

from django.shortcuts import render

from tenants.access import EVERYONE, org_view


@org_view(get=EVERYONE)
def playground(request):
    return render(request, "placeholder.html", {"heading": "Playground", "section": "playground"})
