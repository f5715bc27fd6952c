"""Reads of usage for the dashboard: every figure the overview and the usage page show
comes from here.

Costs are summed exactly on both databases, as integer pico-dollars (billing/sums.py).
The overview reads the usage records themselves; the usage page reads the hourly
rollups (`UsageRollup`, billing/rollups.py), which trail the records by at most the
rollup interval (OPENCLAW_ROLLUP_INTERVAL_SECONDS): once a rollup has run, both give the
same figures for the same period, to the pico-dollar.
"""
from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.db.models import BigIntegerField, Count, F, Q, Sum, Value
from django.db.models.functions import Coalesce, NullIf

from billing.models import Budget, UsageRecord, UsageRollup
from billing.sums import cost_picos as _cost_picos, usd_from_picos as _usd
from tenants.models import Organization

Status = UsageRecord.Status
# Requests that ended in an error (the gateway's, upstream's, or a refusal before upstream).
ERROR_STATUSES = (Status.UPSTREAM_ERROR, Status.UPSTREAM_TIMEOUT, Status.REJECTED, Status.INTERNAL_ERROR,
                  Status.GATEWAY_LOST)
# Requests the client ended.
CANCELLED_STATUSES = (Status.CANCELLED, Status.CLIENT_GONE)


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


def _model_name():
    """The model a request is counted under: the deployment that served it, or the model it
    asked for when none did (refused before upstream). Usage records and rollups alike."""
    return Coalesce(NullIf(F("deployment_name"), Value("")), F("requested_model"))


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


def top_models(*, org: Organization, start: datetime, end: datetime, limit: int = 5) -> list[ModelUsage]:
    """The models `org` used most in [start, end): by requests, then cost.

    A request is counted under the deployment that served it, or under the model it
    asked for when none did (refused before upstream)."""
    rows = (_usage(org, start, end)
            .annotate(model=_model_name())
            .values("model")
            .annotate(requests=Count("pk"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
                      cost_picos=Sum(_cost_picos(), output_field=BigIntegerField()))
            .order_by("-requests", "-cost_picos", "model")[:limit])
    return [ModelUsage(model=row["model"], requests=row["requests"], prompt_tokens=int(row["prompt"] or 0),
                       completion_tokens=int(row["completion"] or 0), cost_usd=_usd(row["cost_picos"]))
            for row in rows]


def org_budgets(*, org: Organization) -> list[Budget]:
    """The org's budgets, enabled first, for the overview's budget panel."""
    return list(Budget.objects.filter(org=org).select_related("api_key", "route", "deployment")
                .order_by("-enabled", "name"))


# --- The usage page: everything from the hourly rollups --------------------------------

HOUR = timedelta(hours=1)


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


def _rollups(org: Organization, start: datetime, end: datetime):
    # Index usage_rollup_org_hour_idx (org, hour) serves this range. A rollup hour
    # belongs to [start, end) when the hour starts in it.
    return UsageRollup.objects.filter(org=org, hour__gte=start, hour__lt=end).order_by()


def _rollup_sums():
    return dict(
        n=Sum("requests"),
        errors=Sum("requests", filter=Q(status__in=ERROR_STATUSES)),
        cancelled=Sum("requests", filter=Q(status__in=CANCELLED_STATUSES)),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        picos=Sum("cost_picos", output_field=BigIntegerField()),
    )


def _figures(row: dict) -> UsageFigures:
    return UsageFigures(requests=int(row["n"] or 0), errors=int(row["errors"] or 0),
                        cancelled=int(row["cancelled"] or 0), prompt_tokens=int(row["prompt"] or 0),
                        completion_tokens=int(row["completion"] or 0), cost_usd=_usd(row["picos"]))


ZERO = UsageFigures(requests=0, errors=0, cancelled=0, prompt_tokens=0, completion_tokens=0, cost_usd=Decimal(0))


def _add(a: UsageFigures, b: UsageFigures) -> UsageFigures:
    return UsageFigures(requests=a.requests + b.requests, errors=a.errors + b.errors,
                        cancelled=a.cancelled + b.cancelled, prompt_tokens=a.prompt_tokens + b.prompt_tokens,
                        completion_tokens=a.completion_tokens + b.completion_tokens,
                        cost_usd=a.cost_usd + b.cost_usd)


def rollup_figures(*, org: Organization, start: datetime, end: datetime) -> UsageFigures:
    """Requests, errors, cancellations, tokens and exact cost of `org` in the rollup hours
    starting in [start, end)."""
    return _figures(_rollups(org, start, end).aggregate(**_rollup_sums()))


def usage_series(*, org: Organization, start: datetime, end: datetime, grain: str, tz: ZoneInfo) -> list[UsagePoint]:
    """Usage over [start, end) bucketed by local hour or local day of `tz` ("hour" or
    "day"), every bucket present (zero when empty), oldest first.

    The database sums per UTC hour (one row per hour); the hours are then added into
    local days here, exactly (integers and Decimals). An hour belongs to the local day it
    starts in, which is exact for every zone whose offset is whole hours."""
    if grain not in ("hour", "day"):
        raise ValueError(f"unknown grain {grain!r}")
    by_hour = {row["hour"]: _figures(row) for row in _rollups(org, start, end).values("hour").annotate(**_rollup_sums())}
    buckets: dict[datetime, UsageFigures] = {}
    if grain == "hour":
        hour = start.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)
        if hour < start:
            hour += HOUR
        while hour < end:
            buckets[hour.astimezone(tz)] = ZERO
            hour += HOUR
        for hour, figures in by_hour.items():
            local = hour.astimezone(tz)
            buckets[local] = _add(buckets.get(local, ZERO), figures)
    else:
        day, last = start.astimezone(tz).date(), (end - timedelta(microseconds=1)).astimezone(tz).date()
        while day <= last:
            buckets[_local_midnight(day, tz)] = ZERO
            day += timedelta(days=1)
        for hour, figures in by_hour.items():
            midnight = _local_midnight(hour.astimezone(tz).date(), tz)
            buckets[midnight] = _add(buckets.get(midnight, ZERO), figures)
    return [UsagePoint(start=moment, figures=figures) for moment, figures in sorted(buckets.items())]


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


# Breakdowns: the name of each, the rollup columns it groups by, and how a row is labelled.
NO_END_USER = "(no end user)"
NO_ROUTE = "(model asked for directly)"


def _breakdown(queryset, group, label, key) -> list[UsageRow]:
    rows = queryset.values(*group).annotate(**_rollup_sums()).order_by("-picos", "-n", *group)
    return [UsageRow(label=label(row), key=key(row), figures=_figures(row)) for row in rows]


def usage_by_model(*, org: Organization, start: datetime, end: datetime) -> list[UsageRow]:
    """By model: the deployment that served each request, or the model asked for (the
    overview's top models count the same way)."""
    return _breakdown(_rollups(org, start, end).annotate(model=_model_name()), ["model"],
                      lambda row: row["model"], lambda row: row["model"])


def usage_by_key(*, org: Organization, start: datetime, end: datetime) -> list[UsageRow]:
    return _breakdown(_rollups(org, start, end), ["api_key__public_id", "api_key__name", "api_key__last_four"],
                      lambda row: f"{row['api_key__name']} (…{row['api_key__last_four']})",
                      lambda row: str(row["api_key__public_id"]))


def usage_by_end_user(*, org: Organization, start: datetime, end: datetime) -> list[UsageRow]:
    """By end user (the `metadata.user_id` clients send; requests without one together)."""
    return _breakdown(_rollups(org, start, end), ["end_user"],
                      lambda row: row["end_user"] or NO_END_USER, lambda row: row["end_user"])


def usage_by_route(*, org: Organization, start: datetime, end: datetime) -> list[UsageRow]:
    """By the route a request named (requests naming a model directly together)."""
    return _breakdown(_rollups(org, start, end), ["via_route__alias"],
                      lambda row: row["via_route__alias"] or NO_ROUTE, lambda row: row["via_route__alias"] or "")


BREAKDOWNS = {"models": usage_by_model, "keys": usage_by_key, "end_users": usage_by_end_user,
              "routes": usage_by_route}


def billing_month(moment: datetime) -> tuple[datetime, datetime]:
    """[first instant, next month's first instant) of the UTC billing month of `moment`."""
    moment = moment.astimezone(dt_timezone.utc)
    start = datetime(moment.year, moment.month, 1, tzinfo=dt_timezone.utc)
    days = calendar.monthrange(moment.year, moment.month)[1]
    return start, start + timedelta(days=days)


def month_to_date(*, org: Organization, now: datetime) -> MonthToDate:
    """The UTC billing month up to `now` (the rollup hours so far, the open one included)
    and a linear projection: month-to-date spend (and requests) times the month's length
    over the time elapsed. The overview's "this month" reads the same period from the
    usage records: equal once the rollup has caught up."""
    start, end = billing_month(now)
    figures = rollup_figures(org=org, start=start, end=now)
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
