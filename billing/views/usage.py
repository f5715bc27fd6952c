"""The "Usage & billing" page: spend, tokens and requests of a period in the org's time
zone, as a chart and four breakdowns, month-to-date with a projection, and every table
as CSV (templates/billing/usage.html). Everything is read through billing/selectors.py
(rollups before their mark, usage records after)."""
from __future__ import annotations

from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.dateformat import format as date_format

from billing import selectors
from billing.rollups import rolled_up_before
from billing.charts import Bar, bar_chart, count_axis, usd_axis
from billing.periods import PRESETS, UsagePeriodForm
from catalog.money import display_usd, format_usd
from tenants.access import MANAGERS, OVERSEERS, org_view
from tenants.forms import OrgTimeZoneForm
from tenants.log_filters import csv_download, invalid_filters_response
from tenants.services import org_set_time_zone

# Rows a breakdown shows on the page; its CSV has them all.
PAGE_ROWS = 100

TABLES = {
    "models": ("Model", "By model"),
    "keys": ("API key", "By API key"),
    "end_users": ("End user", "By end user"),
    "routes": ("Route", "By route"),
}
FIGURE_HEADER = ["requests", "errors", "cancelled", "tokens_in", "tokens_out", "cost_usd"]


def _figure_cells(figures: selectors.UsageFigures) -> list:
    return [figures.requests, figures.errors, figures.cancelled, figures.prompt_tokens, figures.completion_tokens,
            format_usd(figures.cost_usd)]


def _read_period(request, org):
    """(form, period or None when the query string is invalid; no query: this month)."""
    form = UsagePeriodForm(request.GET, tz=ZoneInfo(org.time_zone), now=timezone.now())
    if not form.is_valid():
        return form, None
    return form, form.to_period()


def _series_bars(series, period):
    hourly = period.grain == "hour"
    label_format = "H:i" if hourly else "j M"
    title_format = "D j M, H:i" if hourly else "D j M Y"
    spend, requests = [], []
    for point in series:
        label, when = date_format(point.start, label_format), date_format(point.start, title_format)
        spend.append(Bar(label=label, title=f"{when}: {display_usd(point.figures.cost_usd)}",
                         value=point.figures.cost_usd))
        requests.append(Bar(label=label, title=f"{when}: {point.figures.requests:,} requests",
                            value=point.figures.requests))
    return spend, requests


def _usage_context(org, period, mark):
    series = selectors.usage_series(org=org, start=period.start, end=period.end, grain=period.grain, tz=period.tz,
                                    mark=mark)
    figures = selectors.ZERO
    for point in series:
        figures = selectors.add_figures(figures, point.figures)
    spend_bars, request_bars = _series_bars(series, period)
    grain = "hour" if period.grain == "hour" else "day"
    found = selectors.breakdowns(org=org, start=period.start, end=period.end, names=tuple(TABLES), mark=mark)
    tables = []
    for name, (column, heading) in TABLES.items():
        rows = found[name]
        tables.append({"name": name, "column": column, "heading": heading, "rows": rows[:PAGE_ROWS],
                       "more": max(0, len(rows) - PAGE_ROWS)})
    return {
        "figures": figures,
        "series": series,
        "spend_chart": bar_chart(spend_bars, title=f"Spend per {grain}", axis_label=usd_axis, css_class="spend"),
        "requests_chart": bar_chart(request_bars, title=f"Requests per {grain}", axis_label=count_axis,
                                    css_class="requests"),
        "tables": tables,
    }


def _render(request, form, period, tz_form, status=200):
    org = request.org
    now = timezone.now()
    mark = rolled_up_before()  # one cut for every read of the page
    context = {"section": "usage", "form": form, "period": period, "presets": PRESETS, "tz_form": tz_form,
               "mtd": selectors.month_to_date(org=org, now=now, mark=mark), "now": now}
    if period is not None:
        context.update(_usage_context(org, period, mark))
        context["period_query"] = urlencode(period.as_query())
    return render(request, "billing/usage.html", context, status=status)


@org_view(get=OVERSEERS, post=MANAGERS)
def usage(request):
    org = request.org
    if request.method == "POST":
        tz_form = OrgTimeZoneForm(request.POST)
        if tz_form.is_valid():
            try:
                org_set_time_zone(org=org, time_zone=tz_form.cleaned_data["time_zone"], actor_user=request.user)
            except ValidationError as error:
                tz_form.add_error("time_zone", error)
            else:
                messages.success(request, f"Usage is now shown in {tz_form.cleaned_data['time_zone']}.")
                return redirect(request.get_full_path())
        form, period = _read_period(request, org)
        return _render(request, form, period, tz_form, status=400)
    form, period = _read_period(request, org)
    tz_form = OrgTimeZoneForm(initial={"time_zone": org.time_zone})
    return _render(request, form, period, tz_form, status=200 if period is not None else 400)


def _csv_rows(org, period, table: str) -> tuple[list[str], list[list]]:
    if table == "series":
        header = ["start", *FIGURE_HEADER]
        points = selectors.usage_series(org=org, start=period.start, end=period.end, grain=period.grain,
                                        tz=period.tz)
        return header, [[point.start.isoformat(), *_figure_cells(point.figures)] for point in points]
    column = TABLES[table][0].lower().replace(" ", "_")
    rows = selectors.BREAKDOWNS[table](org=org, start=period.start, end=period.end)
    return [column, "id", *FIGURE_HEADER], [[row.label, row.key, *_figure_cells(row.figures)] for row in rows]


@org_view(get=OVERSEERS)
async def usage_csv(request):
    """One table of the usage page (`table=models|keys|end_users|routes|series`) for the
    same period, as CSV: the same selector, so the same numbers (costs exact)."""
    org = request.org
    table = request.GET.get("table", "")
    form, period = await sync_to_async(_read_period)(request, org)
    if table not in TABLES and table != "series":
        form.add_error(None, "table must be one of: " + ", ".join([*TABLES, "series"]))
    if period is None or form.errors:
        return invalid_filters_response(form)
    header, rows = await sync_to_async(_csv_rows)(org, period, table)

    def fetch_page(cursor):
        return rows, None

    return csv_download(header, fetch_page, f"{org.slug}-usage-{table}-{period.first_day}-{period.last_day}.csv")
