"""Reads of usage for the dashboard: every figure the overview and the usage page show
comes from here.

Costs are summed exactly on both databases, as integer pico-dollars (billing/sums.py).
A period's figures, series and breakdowns read the rollups (billing/rollups.py) before
`RollupProgress.rolled_up_before` — the hour totals, the day facets for whole UTC days,
the detailed hourly rollups for partial days — and the usage records themselves from
it on (the open hour and whatever beat has not rolled up yet). So they are never behind
the records, and the overview's "this month" and the usage page's month-to-date are one
call (`month_to_date`). A record written after its hour was rolled up and trusted (past
the rollup grace window) is in the records but not the rollups until `manage.py
rollup_usage` rebuilds its hours; the reconcile task reports such differences.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import BigIntegerField, Count, Q, Sum

from billing.models import (CANCELLED_STATUSES, ERROR_STATUSES, Budget, UsageDayFacet, UsageHourTotal, UsageRecord,
                            UsageRollup)
from billing.rollups import FACET_VALUES, HourUTC, floor_hour, rolled_up_before
from billing.sums import cost_picos as _cost_picos, usd_from_picos as _usd
from catalog.models import Route
from tenants.models import ApiKey, Organization


@dataclass(frozen=True)
class UsageFigures:
    requests: int
    errors: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ModelUsage:
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _usage(org: Organization, start: datetime, end: datetime):
    # Index usage_org_started_idx (org, started_at) serves this range.
    return UsageRecord.objects.filter(org=org, started_at__gte=start, started_at__lt=end)


def usage_figures(*, org: Organization, start: datetime, end: datetime) -> UsageFigures:
    """Requests, errors, cancellations, tokens and exact cost of `org` started in [start, end)."""
    row = _usage(org, start, end).aggregate(
        requests=Count("pk"),
        errors=Count("pk", filter=Q(status__in=ERROR_STATUSES)),
        cancelled=Count("pk", filter=Q(status__in=CANCELLED_STATUSES)),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        cost_picos=Sum(_cost_picos(), output_field=BigIntegerField()),
    )
    return UsageFigures(requests=row["requests"], errors=row["errors"], cancelled=row["cancelled"],
                        prompt_tokens=int(row["prompt_tokens"] or 0),
                        completion_tokens=int(row["completion_tokens"] or 0), cost_usd=_usd(row["cost_picos"]))


def org_budgets(*, org: Organization) -> list[Budget]:
    """The org's budgets, enabled first, for the overview's budget panel."""
    return list(Budget.objects.filter(org=org).select_related("api_key", "route", "deployment")
                .order_by("-enabled", "name"))


# --- Periods: rollups before the mark, usage records from it on -------------------------

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@dataclass(frozen=True)
class UsagePoint:
    """One bucket of the usage series: a local day, or one hour (`start` is local)."""
    start: datetime
    figures: UsageFigures


@dataclass(frozen=True)
class UsageRow:
    """One row of a breakdown: `label` for people, `key` a stable identifier (the API
    key's public id, the route's name, ...) or "" for requests without one."""
    label: str
    key: str
    figures: UsageFigures


@dataclass(frozen=True)
class MonthToDate:
    """This UTC billing month so far and its linear projection to the month's end."""
    start: datetime
    end: datetime  # the month's end (the next month's first instant)
    now: datetime
    figures: UsageFigures
    projected_cost_usd: Decimal
    projected_requests: int


ZERO = UsageFigures(requests=0, errors=0, cancelled=0, prompt_tokens=0, completion_tokens=0, cost_usd=Decimal(0))


def add_figures(a: UsageFigures, b: UsageFigures) -> UsageFigures:
    return UsageFigures(requests=a.requests + b.requests, errors=a.errors + b.errors,
                        cancelled=a.cancelled + b.cancelled, prompt_tokens=a.prompt_tokens + b.prompt_tokens,
                        completion_tokens=a.completion_tokens + b.completion_tokens,
                        cost_usd=a.cost_usd + b.cost_usd)


def _figures(row: dict) -> UsageFigures:
    return UsageFigures(requests=int(row["n"] or 0), errors=int(row["errors"] or 0),
                        cancelled=int(row["cancelled"] or 0), prompt_tokens=int(row["prompt"] or 0),
                        completion_tokens=int(row["completion"] or 0), cost_usd=_usd(row["picos"]))


def _record_sums() -> dict:
    return dict(n=Count("pk"), errors=Count("pk", filter=Q(status__in=ERROR_STATUSES)),
                cancelled=Count("pk", filter=Q(status__in=CANCELLED_STATUSES)), prompt=Sum("prompt_tokens"),
                completion=Sum("completion_tokens"), picos=Sum(_cost_picos(), output_field=BigIntegerField()))


def _detail_sums() -> dict:
    """Sums of detailed hourly rollup rows (one status each)."""
    return dict(n=Sum("requests"), errors=Sum("requests", filter=Q(status__in=ERROR_STATUSES)),
                cancelled=Sum("requests", filter=Q(status__in=CANCELLED_STATUSES)), prompt=Sum("prompt_tokens"),
                completion=Sum("completion_tokens"), picos=Sum("cost_picos", output_field=BigIntegerField()))


def _derived_sums() -> dict:
    """Sums of hour totals and day facets (errors and cancellations counted already)."""
    return dict(n=Sum("requests"), errors=Sum("errors"), cancelled=Sum("cancelled"), prompt=Sum("prompt_tokens"),
                completion=Sum("completion_tokens"), picos=Sum("cost_picos", output_field=BigIntegerField()))


@dataclass(frozen=True)
class _Split:
    """[start, end) cut at the rollups' mark: `rolled` = [start, mid) is read from the
    rollups (hours starting in it), `live` = [mid, end) from the usage records."""
    start: datetime
    mid: datetime
    end: datetime

    @property
    def rolled(self) -> bool:
        return self.start < self.mid

    @property
    def live(self) -> bool:
        return self.mid < self.end


UNSET = object()  # a selector's `mark` when the caller read none: the rollups' own


def _mark(mark):
    """The rollups' mark: the caller's (None: nothing rolled up is trusted), else read now
    (one query; a page reads it once and passes it to every selector)."""
    return rolled_up_before() if mark is UNSET else mark


def _split(start: datetime, end: datetime, mark: datetime | None) -> _Split:
    mid = start if mark is None else min(max(mark, start), end)
    return _Split(start, mid, end)


def _hourly_figures(org: Organization, split: _Split) -> dict[datetime, UsageFigures]:
    """Figures per UTC hour (only hours with usage)."""
    by_hour: dict[datetime, UsageFigures] = {}
    if split.rolled:
        # Index uniq_usage_hour_total (org, hour): about 720 rows for a month.
        rows = (UsageHourTotal.objects.filter(org=org, hour__gte=split.start, hour__lt=split.mid).order_by()
                .values("hour").annotate(**_derived_sums()))
        for row in rows:
            by_hour[row["hour"]] = _figures(row)
    if split.live:
        rows = (_usage(org, split.mid, split.end).annotate(hour=HourUTC("started_at")).values("hour")
                .annotate(**_record_sums()))
        for row in rows:
            by_hour[row["hour"]] = add_figures(by_hour.get(row["hour"], ZERO), _figures(row))
    return by_hour


def period_figures(*, org: Organization, start: datetime, end: datetime, mark=UNSET) -> UsageFigures:
    """Requests, errors, cancellations, tokens and exact cost of `org` in [start, end):
    rollups before the mark, records from it on."""
    split = _split(start, end, _mark(mark))
    total = ZERO
    for figures in _hourly_figures(org, split).values():
        total = add_figures(total, figures)
    return total


def usage_series(*, org: Organization, start: datetime, end: datetime, grain: str, tz: ZoneInfo,
                 mark=UNSET) -> list[UsagePoint]:
    """Usage over [start, end) bucketed by local hour or local day of `tz` ("hour" or
    "day"), every bucket present (zero when empty), oldest first.

    The database sums per UTC hour; the hours are then added into local days here,
    exactly (integers and Decimals). An hour belongs to the local day it starts in,
    which is exact for every zone whose offset is whole hours."""
    if grain not in ("hour", "day"):
        raise ValueError(f"unknown grain {grain!r}")
    by_hour = _hourly_figures(org, _split(start, end, _mark(mark)))
    buckets: dict[datetime, UsageFigures] = {}
    if grain == "hour":
        hour = floor_hour(start)
        if hour < start:
            hour += HOUR
        while hour < end:
            buckets[hour.astimezone(tz)] = ZERO
            hour += HOUR
        for hour, figures in by_hour.items():
            local = hour.astimezone(tz)
            buckets[local] = add_figures(buckets.get(local, ZERO), figures)
    else:
        day, last = start.astimezone(tz).date(), (end - timedelta(microseconds=1)).astimezone(tz).date()
        while day <= last:
            buckets[_local_midnight(day, tz)] = ZERO
            day += DAY
        for hour, figures in by_hour.items():
            midnight = _local_midnight(hour.astimezone(tz).date(), tz)
            buckets[midnight] = add_figures(buckets.get(midnight, ZERO), figures)
    return [UsagePoint(start=moment, figures=figures) for moment, figures in sorted(buckets.items())]


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


# --- Breakdowns: by model, API key, end user and route ------------------------------------

NO_END_USER = "(no end user)"
NO_ROUTE = "(model asked for directly)"
# Breakdown name (the page's and the CSV's) -> the facet it reads.
FACETS = {"models": UsageDayFacet.Facet.MODEL, "keys": UsageDayFacet.Facet.KEY,
          "end_users": UsageDayFacet.Facet.END_USER, "routes": UsageDayFacet.Facet.ROUTE}


def _ceil_day(moment: datetime) -> datetime:
    floor = floor_hour(moment).replace(hour=0)
    return floor if floor == moment else floor + DAY


def _facet_values(org: Organization, split: _Split, facets: list[str]) -> dict[str, dict[str, UsageFigures]]:
    """facet -> breakdown value -> figures over the period."""
    found: dict[str, dict[str, UsageFigures]] = {facet: {} for facet in facets}

    def count(facet, value, figures):
        found[facet][value] = add_figures(found[facet].get(value, ZERO), figures)

    if split.rolled:
        # Whole UTC days from the day facets, the hours around them from the detailed rollups.
        first_day, end_day = _ceil_day(split.start), floor_hour(split.mid).replace(hour=0)
        edges = Q(hour__gte=split.start, hour__lt=split.mid)
        if first_day < end_day:
            rows = (UsageDayFacet.objects
                    .filter(org=org, facet__in=facets, day__gte=first_day.date(), day__lt=end_day.date()).order_by()
                    .values("facet", "value").annotate(**_derived_sums()))
            for row in rows:
                count(row["facet"], row["value"], _figures(row))
            edges = Q(hour__gte=split.start, hour__lt=first_day) | Q(hour__gte=end_day, hour__lt=split.mid)
        _count_grouped(UsageRollup.objects.filter(edges, org=org), facets, _detail_sums(), count)
    if split.live:
        _count_grouped(_usage(org, split.mid, split.end), facets, _record_sums(), count)
    return found


def _count_grouped(queryset, facets: list[str], sums: dict, count) -> None:
    """One query grouped by every facet's value at once (the hours around whole days, or
    the records after the mark: few rows), each row counted under each facet."""
    names = {facet: f"facet_{facet}" for facet in facets}
    rows = (queryset.order_by().annotate(**{names[facet]: FACET_VALUES[facet]() for facet in facets})
            .values(*names.values()).annotate(**sums))
    for row in rows:
        figures = _figures(row)
        for facet in facets:
            count(facet, row[names[facet]], figures)


def _labelled(facet: str, values: dict[str, UsageFigures]) -> list[UsageRow]:
    if facet == UsageDayFacet.Facet.KEY:
        keys = {str(row["pk"]): row for row in ApiKey.objects.filter(pk__in=[int(v) for v in values])
                .values("pk", "public_id", "name", "last_four")}
        rows = [UsageRow(label=f"{keys[v]['name']} (…{keys[v]['last_four']})", key=str(keys[v]["public_id"]),
                         figures=f) for v, f in values.items()]
    elif facet == UsageDayFacet.Facet.ROUTE:
        aliases = {str(pk): alias for pk, alias in
                   Route.objects.filter(pk__in=[int(v) for v in values if v]).values_list("pk", "alias")}
        rows = [UsageRow(label=aliases.get(v, NO_ROUTE) if v else NO_ROUTE, key=aliases.get(v, ""), figures=f)
                for v, f in values.items()]
    elif facet == UsageDayFacet.Facet.END_USER:
        rows = [UsageRow(label=v or NO_END_USER, key=v, figures=f) for v, f in values.items()]
    else:
        rows = [UsageRow(label=v, key=v, figures=f) for v, f in values.items()]
    return sorted(rows, key=lambda row: (-row.figures.cost_usd, -row.figures.requests, row.label))


def breakdowns(*, org: Organization, start: datetime, end: datetime, names=tuple(FACETS),
               mark=UNSET) -> dict[str, list[UsageRow]]:
    """The period's usage by model (the deployment that served, else the model asked
    for), API key, end user (`metadata.user_id`; none together) and route (a model asked
    for directly together), each row's figures exact, most expensive first."""
    split = _split(start, end, _mark(mark))
    found = _facet_values(org, split, [FACETS[name] for name in names])
    return {name: _labelled(FACETS[name], found[FACETS[name]]) for name in names}


def _one(name: str):
    def breakdown(*, org: Organization, start: datetime, end: datetime) -> list[UsageRow]:
        return breakdowns(org=org, start=start, end=end, names=(name,))[name]
    breakdown.__name__ = f"usage_by_{name}"
    return breakdown


BREAKDOWNS = {name: _one(name) for name in FACETS}
usage_by_model, usage_by_key = BREAKDOWNS["models"], BREAKDOWNS["keys"]
usage_by_end_user, usage_by_route = BREAKDOWNS["end_users"], BREAKDOWNS["routes"]


def top_models(*, org: Organization, start: datetime, end: datetime, limit: int = 5, mark=UNSET) -> list[ModelUsage]:
    """The models `org` used most in [start, end): by requests, then cost (the usage
    page's "by model", in another order)."""
    rows = sorted(breakdowns(org=org, start=start, end=end, names=("models",), mark=mark)["models"],
                  key=lambda row: (-row.figures.requests, -row.figures.cost_usd, row.label))[:limit]
    return [ModelUsage(model=row.label, requests=row.figures.requests, prompt_tokens=row.figures.prompt_tokens,
                       completion_tokens=row.figures.completion_tokens, cost_usd=row.figures.cost_usd)
            for row in rows]


def billing_month(moment: datetime) -> tuple[datetime, datetime]:
    """[first instant, next month's first instant) of the UTC billing month of `moment`."""
    moment = moment.astimezone(dt_timezone.utc)
    start = datetime(moment.year, moment.month, 1, tzinfo=dt_timezone.utc)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return start, start + timedelta(days=days)


def month_to_date(*, org: Organization, now: datetime, mark=UNSET) -> MonthToDate:
    """The UTC billing month up to `now` and a linear projection: month-to-date spend (and
    requests) times the month's length over the time elapsed. The overview's "this month"
    and the usage page's month-to-date are this call."""
    start, end = billing_month(now)
    figures = period_figures(org=org, start=start, end=now + timedelta(microseconds=1), mark=mark)
    elapsed = Decimal(int((now - start).total_seconds() * 1_000_000))
    total = Decimal(int((end - start).total_seconds() * 1_000_000))
    if elapsed <= 0:
        projected_cost, projected_requests = figures.cost_usd, figures.requests
    else:
        ratio = total / elapsed
        projected_cost = (figures.cost_usd * ratio).quantize(Decimal(1).scaleb(-6))
        projected_requests = int((figures.requests * ratio).to_integral_value())
    return MonthToDate(start=start, end=end, now=now, figures=figures, projected_cost_usd=projected_cost,
                       projected_requests=projected_requests)
