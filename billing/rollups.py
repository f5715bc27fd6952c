"""Usage rollups: exact hourly aggregates of the usage records by every dimension
(`UsageRollup`), and the daily ones derived from them (`UsageDailyRollup`).

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

Two rebuilds never interleave: on PostgreSQL each takes a transaction-level advisory
lock first; SQLite lets one writer at a time. (Without it, READ COMMITTED would let a
second rebuild miss the first one's fresh rows when deleting, and the unique index
would refuse its insert.)
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BigIntegerField, Count, DateField, DateTimeField, Func, Sum, Value
from django.utils import timezone

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

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "hourly_rows": self.hourly_rows,
                "daily_rows": self.daily_rows}


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(dt_timezone.utc).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def _floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def usage_rollup_hours(start: datetime, end: datetime, *, models=None) -> RollupRun:
    """Rebuild the hourly rollups of every whole hour in [start, end) (start rounded down,
    end up, to the hour) and the daily rollups of the UTC days they touch. One
    transaction; idempotent. `models` (usage, hourly, daily model classes) lets a
    migration pass its historical models."""
    if timezone.is_naive(start) or timezone.is_naive(end):
        raise ValueError("start and end must be aware datetimes")
    start, end = floor_hour(start), ceil_hour(end)
    if start >= end:
        raise ValueError(f"empty period: {start.isoformat()} is not before {end.isoformat()}")
    if models is None:
        from billing.models import UsageDailyRollup, UsageRecord, UsageRollup
        models = (UsageRecord, UsageRollup, UsageDailyRollup)
    usage, hourly, daily = models
    first_day, ceil_day = _floor_day(start), _floor_day(end - HOUR) + DAY
    now = timezone.now()

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
    with transaction.atomic():
        lock_rollups()
        hourly.objects.filter(hour__gte=start, hour__lt=end).delete()
        hourly_rows = _insert_select(hourly, by_hour)
        daily.objects.filter(day__gte=first_day.date(), day__lt=ceil_day.date()).delete()
        daily_rows = _insert_select(daily, by_day)
    return RollupRun(start=start, end=end, hourly_rows=hourly_rows, daily_rows=daily_rows)


def lock_rollups() -> None:
    """Inside a transaction: wait for any rollup rebuild to commit and keep others out
    until this transaction ends (PostgreSQL; SQLite has one writer at a time). Also taken
    by readers that must see the rollups in one state across several queries (a billing
    report's lines and totals)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADVISORY_LOCK])


def usage_rollup_recent(*, now: datetime | None = None, grace_seconds: int | None = None) -> RollupRun:
    """What beat runs: the open hour and every hour back to `now - grace`."""
    now = now or timezone.now()
    grace = settings.USAGE_ROLLUP_GRACE_SECONDS if grace_seconds is None else grace_seconds
    return usage_rollup_hours(now - timedelta(seconds=grace), floor_hour(now) + HOUR)


# Rollup column of each name the SELECTs above produce (a field's name, or an annotation's).
_COLUMNS = {
    "org": "org_id", "api_key": "api_key_id", "deployment": "deployment_id", "via_route": "via_route_id",
    "deployment_name": "deployment_name", "end_user": "end_user", "requested_model": "requested_model",
    "status": "status", "input_price_per_mtok": "input_price_per_mtok",
    "output_price_per_mtok": "output_price_per_mtok", "rollup_hour": "hour", "rollup_day": "day", "rollup_requests": "requests",
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
