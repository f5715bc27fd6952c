"""Pages of the site itself, outside any organization."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render

from tenants.access import member_orgs


@login_required
def home(request):
    """Send a signed-in user to their first organization's overview."""
    orgs = member_orgs(request.user)
    if orgs:
        return redirect("overview", org=orgs[0][0].slug)
    return render(request, "no_orgs.html", status=200)
