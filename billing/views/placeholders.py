"""Pages of the billing app not built yet: they render the placeholder template."""
from __future__ import annotations

from django.shortcuts import render

from tenants.access import OVERSEERS, org_view


@org_view(get=OVERSEERS)
def budgets(request):
    return render(request, "placeholder.html", {"heading": "Budgets", "section": "budgets"})
