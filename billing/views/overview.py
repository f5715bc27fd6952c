"""The overview: the landing page of an organization for every role."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta, timezone

from django.shortcuts import render
from django.utils import timezone as django_timezone

from billing import selectors
from billing.budget_status import budget_statuses
from billing.rollups import rolled_up_before
from tenants.access import EVERYONE, org_view


@dataclass(frozen=True)
class Period:
    label: str
    start: datetime
    end: datetime
    figures: selectors.UsageFigures | None = None


def _periods(now: datetime) -> dict[str, Period]:
    """Today, the last 7 days and this month, in UTC, each up to now."""
    today = datetime.combine(now.date(), time.min, tzinfo=timezone.utc)
    end = now + timedelta(microseconds=1)
    return {"today": Period("Today", today, end),
            "week": Period("Last 7 days", now - timedelta(days=7), end),
            "month": Period("This month", today.replace(day=1), end)}


@org_view(get=EVERYONE)
def overview(request):
    now = django_timezone.now().astimezone(timezone.utc)
    org = request.org
    mark = rolled_up_before()
    mtd = selectors.month_to_date(org=org, now=now, mark=mark)  # the usage page's month-to-date, the same call
    periods = {name: replace(period, figures=mtd.figures if name == "month" else
                             selectors.usage_figures(org=org, start=period.start, end=period.end))
               for name, period in _periods(now).items()}
    month = periods["month"]
    context = {
        "section": "overview",
        "now": now,
        "periods": list(periods.values()),
        "today": periods["today"].figures,
        "month": month.figures,
        "month_start": month.start,
        "top_models": selectors.top_models(org=org, start=month.start, end=month.end, limit=5, mark=mark),
        "budget_statuses": budget_statuses(org, budgets=selectors.org_budgets(org=org)),
    }
    return render(request, "billing/overview.html", context)
