"""The overview: the landing page of an organization for every role."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from django.shortcuts import render
from django.utils import timezone as django_timezone

from billing import selectors
from tenants.access import EVERYONE, org_view


def _periods(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    """Today and this month, in UTC, each ending now."""
    today = datetime.combine(now.date(), time.min, tzinfo=timezone.utc)
    month = today.replace(day=1)
    return {"today": (today, now + timedelta(microseconds=1)), "month": (month, now + timedelta(microseconds=1))}


@org_view(get=EVERYONE)
def overview(request):
    now = django_timezone.now().astimezone(timezone.utc)
    periods = _periods(now)
    org = request.org
    context = {
        "section": "overview",
        "now": now,
        "today": selectors.usage_figures(org=org, start=periods["today"][0], end=periods["today"][1]),
        "month": selectors.usage_figures(org=org, start=periods["month"][0], end=periods["month"][1]),
        "month_start": periods["month"][0],
        "top_models": selectors.top_models(org=org, start=periods["month"][0], end=periods["month"][1], limit=5),
        "budgets": selectors.org_budgets(org=org),
    }
    return render(request, "billing/overview.html", context)
