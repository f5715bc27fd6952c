"""Usage rollups: exact hourly aggregates of the usage records by every dimension
(`UsageRollup`), and the tables derived from them in the same transaction: per org and
UTC day by key and deployment (`UsageDailyRollup`), per org and hour with every
dimension summed (`UsageHourTotal`), and per org, UTC day and breakdown value
(`UsageDayFacet`: by model, key, end user, route) — the last two so that the usage
page reads a month in a few thousand rows rather than the detailed hourly ones.

A request belongs to the hour of its `started_at` (UTC). `usage_rollup_hours`
rebuilds whole hours: in one transaction it deletes their rollup rows and inserts
them again with one INSERT ... SELECT ... GROUP BY over the usage records (the
database aggregates; no record passes through Python), then does the same for the
UTC days those hours touch, from the hourly rows. Rebuilding a range twice gives the
same rows (only `updated_at` moves), so the beat task can recompute the open hour and
every hour back to the grace window on each run: a record written late (a lease
reaped after its process died, a dead-letter replay) lands in its own hour as long as
it arrives within `USAGE_ROLLUP_GRACE_SECONDS`; `manage.py rollup_usage` rebuilds any
older range. Costs are integer pico-dollars (billing/sums.py): exact on SQLite too.

`RollupProgress.rolled_up_before` says how far the rollups can be trusted: a rebuild
that starts at or before it (no gap) moves it to the end of what it rebuilt, up to the
open hour, which is never "before" it. Beat's run (`usage_rollup_recent`) starts at the
grace window or, after beat was down for longer, at that mark, so it catches up on its
own. The dashboard's figures read the rollups before the mark and the usage records from
it on (billing/selectors.py).

Two rebuilds never interleave: on PostgreSQL each takes a transaction-level advisory
lock first; SQLite lets one writer at a time. (Without it, READ COMMITTED would let a
second rebuild miss the first one's fresh rows when deleting, and the unique index
would refuse its insert.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import connection, transaction
from django.db.models import (BigIntegerField, CharField, Count, DateField, DateTimeField, F, Func, Q, Sum,
                              Value)
from django.db.models.functions import Cast, Coalesce, NullIf

from django.utils import timezone

from billing.models import CANCELLED_STATUSES, ERROR_STATUSES
from billing.sums import cost_picos

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# pg_advisory_xact_lock key serialising rebuilds (any constant no other lock uses).
_ADVISORY_LOCK = 0x6F63_726F_6C6C  # "ocroll"


class HourUTC(Func):
    """The UTC hour a timestamp falls in, as a timestamp at :00, in each database's own
    SQL (Django's TruncHour calls a Python function per row on SQLite)."""

    arity = 1
    output_field = DateTimeField()
    template = "date_trunc('hour', %(expressions)s AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"

    def as_sqlite(self, compiler, connection, **extra):
        # Django keeps SQLite datetimes as UTC text 'YYYY-MM-DD HH:MM:SS[.ffffff]'; the
        # result has the same form. '%%%%' is one '%' once Django's formatting is done.
        return self.as_sql(compiler, connection, template="strftime('%%%%Y-%%%%m-%%%%d %%%%H:00:00', %(expressions)s)",
                           **extra)


class DayUTC(Func):
    """The UTC date of a timestamp."""

    arity = 1
    output_field = DateField()
    template = "CAST((%(expressions)s AT TIME ZONE 'UTC') AS date)"

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="date(%(expressions)s)", **extra)


@dataclass(frozen=True)
class RollupRun:
    start: datetime
    end: datetime
    hourly_rows: int
    daily_rows: int
    # Seconds per step (hourly, daily, totals, facets, commit): where a slow run's time went.
    seconds: dict = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "hourly_rows": self.hourly_rows,
                "daily_rows": self.daily_rows, "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def _floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def _current_models() -> tuple:
    from billing.models import (RollupProgress, UsageDailyRollup, UsageDayFacet, UsageHourTotal, UsageRecord,
                                UsageRollup)
    return (UsageRecord, UsageRollup, UsageDailyRollup, UsageHourTotal, UsageDayFacet, RollupProgress)


def usage_rollup_hours(start: datetime, end: datetime, *, models=None, now: datetime | None = None) -> RollupRun:
    """Rebuild the hourly rollups of every whole hour in [start, end) (start rounded down,
    end up, to the hour), the hour totals of those hours, and the daily rollups and day
    facets of the UTC days they touch; move `RollupProgress` on when the range leaves no
    gap. One transaction; idempotent. `models` lets a migration pass its historical
    models: (usage, hourly, daily), optionally followed by (hour totals, day facets,
    progress). `now` (default: the clock) stamps the rows and bounds the progress mark."""
    if timezone.is_naive(start) or timezone.is_naive(end):
        raise ValueError("start and end must be aware datetimes")
    start, end = floor_hour(start), ceil_hour(end)
    if start >= end:
        raise ValueError(f"empty period: {start.isoformat()} is not before {end.isoformat()}")
    usage, hourly, daily, totals, facets, progress = (tuple(models) + (None,) * 3)[:6] if models else _current_models()
    first_day, ceil_day = _floor_day(start), _floor_day(end - HOUR) + DAY
    now = now or timezone.now()

    dimensions = ["org", "rollup_hour", "api_key", "deployment", "deployment_name", "end_user", "requested_model",
                  "via_route", "status", "input_price_per_mtok", "output_price_per_mtok"]
    # Migration 0007's historical rollup predates the prices (billing 0008).
    hourly_fields = {f.name for f in hourly._meta.get_fields()}
    dimensions = [name for name in dimensions if name == "rollup_hour" or name in hourly_fields]
    by_hour = (
        usage.objects.filter(started_at__gte=start, started_at__lt=end).order_by()
        .annotate(rollup_hour=HourUTC("started_at"))
        .values(*dimensions)
        .annotate(rollup_requests=Count("pk"), rollup_prompt=Sum("prompt_tokens"),
                  rollup_completion=Sum("completion_tokens"),
                  rollup_picos=Sum(cost_picos(), output_field=BigIntegerField()),
                  rollup_updated=Value(now, output_field=DateTimeField()))
    )
    by_day = (
        hourly.objects.filter(hour__gte=first_day, hour__lt=ceil_day).order_by()
        .annotate(rollup_day=DayUTC("hour"))
        .values("org", "api_key", "deployment_name", "rollup_day")
        .annotate(rollup_requests=Sum("requests"), rollup_prompt=Sum("prompt_tokens"),
                  rollup_completion=Sum("completion_tokens"),
                  rollup_picos=Sum("cost_picos", output_field=BigIntegerField()),
                  rollup_updated=Value(now, output_field=DateTimeField()))
    )
    seconds, clock = {}, time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        seconds[name], clock = time.perf_counter() - clock, time.perf_counter()

    with transaction.atomic():
        lock_rollups()
        hourly.objects.filter(hour__gte=start, hour__lt=end).delete()
        hourly_rows = _insert_select(hourly, by_hour)
        step("hourly")
        daily.objects.filter(day__gte=first_day.date(), day__lt=ceil_day.date()).delete()
        daily_rows = _insert_select(daily, by_day)
        step("daily")
        if totals is not None:
            _rebuild_hour_totals(hourly, totals, start, end, now)
            step("totals")
            _rebuild_day_facets(hourly, facets, first_day, ceil_day, now)
            step("facets")
            _advance_progress(progress, start, end, now)
    step("commit")
    return RollupRun(start=start, end=end, hourly_rows=hourly_rows, daily_rows=daily_rows, seconds=seconds)


def _sums(now: datetime) -> dict:
    """The sums of hourly rollup rows, named for `_insert_select`."""
    return dict(
        rollup_requests=Sum("requests"),
        rollup_errors=Coalesce(Sum("requests", filter=Q(status__in=ERROR_STATUSES)), 0),
        rollup_cancelled=Coalesce(Sum("requests", filter=Q(status__in=CANCELLED_STATUSES)), 0),
        rollup_prompt=Sum("prompt_tokens"),
        rollup_completion=Sum("completion_tokens"),
        rollup_picos=Sum("cost_picos", output_field=BigIntegerField()),
        rollup_updated=Value(now, output_field=DateTimeField()),
    )


def _rebuild_hour_totals(hourly, totals, start: datetime, end: datetime, now: datetime) -> None:
    totals.objects.filter(hour__gte=start, hour__lt=end).delete()
    _insert_select(totals, hourly.objects.filter(hour__gte=start, hour__lt=end).order_by()
                   .values("org", "hour").annotate(**_sums(now)))


# What each breakdown groups by, as an expression over an hourly rollup row or a usage
# record (the same field names): billing/selectors.py groups by the same expressions.
FACET_VALUES = {
    "model": lambda: Coalesce(NullIf(F("deployment_name"), Value("")), F("requested_model")),
    "key": lambda: Cast(F("api_key_id"), CharField()),
    "end_user": lambda: F("end_user"),
    "route": lambda: Coalesce(Cast(F("via_route_id"), CharField()), Value("")),
}


def _rebuild_day_facets(hourly, facets, first_day: datetime, ceil_day: datetime, now: datetime) -> None:
    facets.objects.filter(day__gte=first_day.date(), day__lt=ceil_day.date()).delete()
    rows = hourly.objects.filter(hour__gte=first_day, hour__lt=ceil_day).order_by()
    for facet, value in FACET_VALUES.items():
        _insert_select(facets, rows.annotate(rollup_day=DayUTC("hour"), facet_name=Value(facet),
                                             facet_value=value())
                       .values("org", "rollup_day", "facet_name", "facet_value").annotate(**_sums(now)))


def _advance_progress(progress, start: datetime, end: datetime, now: datetime) -> None:
    """Hours before `end` are trusted once rebuilt, if this range starts where the trusted
    ones end (or before); the open hour never is."""
    state, _ = progress.objects.get_or_create(pk=1)
    mark = state.rolled_up_before
    if mark is not None and start <= mark:
        reached = min(end, floor_hour(now))
        if reached > mark:
            state.rolled_up_before = reached
            state.save(update_fields=["rolled_up_before"])


def rolled_up_before() -> datetime | None:
    """Where the trusted rollups end (None: nothing trusted; read the usage records)."""
    from billing.models import RollupProgress
    return RollupProgress.objects.filter(pk=1).values_list("rolled_up_before", flat=True).first()


def start_progress(progress, usage, now: datetime) -> None:
    """Mark the rollups trusted from the first usage record on (or from now, with none),
    for a rebuild starting there to move on from: a migration's, once it rebuilt
    everything."""
    first = usage.objects.order_by("started_at").values_list("started_at", flat=True).first()
    progress.objects.update_or_create(pk=1, defaults={"rolled_up_before": floor_hour(first or now)})


def lock_rollups() -> None:
    """Inside a transaction: wait for any rollup rebuild to commit and keep others out
    until this transaction ends (PostgreSQL; SQLite has one writer at a time). Also taken
    by readers that must see the rollups in one state across several queries (a billing
    report's lines and totals)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])


def usage_rollup_recent(*, now: datetime | None = None, grace_seconds: int | None = None) -> RollupRun:
    """What beat runs: the open hour and every hour back to `now - grace`, or back to
    where the trusted rollups end when that is earlier (beat was down), so the run
    catches up; with nothing trusted yet, from the first usage record."""
    now = now or timezone.now()
    grace = settings.USAGE_ROLLUP_GRACE_SECONDS if grace_seconds is None else grace_seconds
    start = now - timedelta(seconds=grace)
    mark = rolled_up_before()
    if mark is None:
        from billing.models import RollupProgress, UsageRecord
        start_progress(RollupProgress, UsageRecord, now)
        mark = rolled_up_before()
    return usage_rollup_hours(min(start, mark), floor_hour(now) + HOUR, now=now)


# Rollup column of each name the SELECTs above produce (a field's name, or an annotation's).
_COLUMNS = {
    "org": "org_id", "api_key": "api_key_id", "deployment": "deployment_id", "via_route": "via_route_id",
    "deployment_name": "deployment_name", "end_user": "end_user", "requested_model": "requested_model",
    "status": "status", "input_price_per_mtok": "input_price_per_mtok",
    "output_price_per_mtok": "output_price_per_mtok", "rollup_hour": "hour", "rollup_day": "day", "rollup_requests": "requests",
    "rollup_errors": "errors", "rollup_cancelled": "cancelled", "hour": "hour", "facet_name": "facet",
    "facet_value": "value",
    "rollup_prompt": "prompt_tokens", "rollup_completion": "completion_tokens", "rollup_picos": "cost_picos",
    "rollup_updated": "updated_at",
}


def _insert_select(model, queryset) -> int:
    """INSERT INTO model's table the rows of an aggregate queryset, in the database (the
    ORM has no INSERT ... SELECT). The target columns follow the compiled SELECT's order."""
    compiler = queryset.query.get_compiler(connection=connection)
    sql, params = compiler.as_sql()
    names = []
    for expression, _sql, alias in compiler.select:
        name = alias if alias in _COLUMNS else getattr(getattr(expression, "target", None), "name", alias)
        names.append(_COLUMNS[name])
    quote = connection.ops.quote_name
    columns = ", ".join(quote(name) for name in names)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(model._meta.db_table)} ({columns}) {sql}", list(params))
        return max(cursor.rowcount, 0)
