"""The usage page's selectors (billing/selectors.py: rollups before their mark, usage
records after): exact and equal to the raw usage sums wherever the mark is; local days of
the org's time zone; month to date; the projection."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from billing import selectors
from billing.models import RollupProgress, UsageRecord
from billing.rollups import usage_rollup_hours
from catalog.models import Route
from tenants.services import api_key_create

pytestmark = [pytest.mark.django_db]

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
D = datetime(2031, 5, 10, tzinfo=UTC)


def add(org, key, count=1, *, at, **fields):
    values = dict(org=org, api_key=key, requested_model="gpt-4o", deployment_name="gpt-4o-east", status="success",
                  prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.1"), started_at=at)
    values.update(fields)
    UsageRecord.objects.bulk_create([UsageRecord(**values) for _ in range(count)])


def roll(start=D - timedelta(days=40), end=D + timedelta(days=40), *, now=None):
    """Roll [start, end) up as beat would have by `now` (default `end`): the rollups are
    then trusted up to the hour `now` falls in."""
    RollupProgress.objects.update_or_create(pk=1, defaults={"rolled_up_before": start})
    usage_rollup_hours(start, end, now=now or end)


@pytest.fixture
def key(org):
    return api_key_create(org=org, name="backend").api_key


def test_breakdowns_sum_exactly_to_the_raw_usage_with_errors_and_cancelled_apart(org, key):
    other_key = api_key_create(org=org, name="batch").api_key
    route = Route.objects.create(org=org, alias="smart")
    add(org, key, 1000, at=D + timedelta(hours=1), end_user="alice")  # 1000 x $0.1: inexact as SQLite floats
    add(org, key, 3, at=D + timedelta(hours=2), status="upstream_error", cost_usd=Decimal("0"), end_user="bob")
    add(org, other_key, 2, at=D + timedelta(hours=3), status="cancelled", deployment_name="", requested_model="mini",
        cost_usd=Decimal("0.000000000001"), via_route=route)
    add(org, key, 4, at=D + timedelta(days=3))  # outside the period
    roll()
    start, end = D, D + timedelta(days=1)
    raw = selectors.usage_figures(org=org, start=start, end=end)
    assert selectors.period_figures(org=org, start=start, end=end) == raw
    assert raw.cost_usd == Decimal("100.000000000002") and raw.errors == 3 and raw.cancelled == 2
    for name, breakdown in selectors.BREAKDOWNS.items():
        rows = breakdown(org=org, start=start, end=end)
        total = selectors.ZERO
        for row in rows:
            total = selectors.add_figures(total, row.figures)
        assert total == raw, name
    by_model = {row.label: row.figures for row in selectors.usage_by_model(org=org, start=start, end=end)}
    assert by_model["gpt-4o-east"].requests == 1003 and by_model["gpt-4o-east"].errors == 3
    assert by_model["mini"].cancelled == 2  # refused before a deployment: counted under the model asked for
    by_key = {row.key: row for row in selectors.usage_by_key(org=org, start=start, end=end)}
    assert by_key[str(other_key.public_id)].label == f"batch (…{other_key.last_four})"
    by_user = {row.label: row.figures.requests for row in selectors.usage_by_end_user(org=org, start=start, end=end)}
    assert by_user == {"alice": 1000, "bob": 3, selectors.NO_END_USER: 2}
    by_route = {row.label: row.figures.requests for row in selectors.usage_by_route(org=org, start=start, end=end)}
    assert by_route == {selectors.NO_ROUTE: 1003, "smart": 2}


def test_another_orgs_usage_is_not_counted(org, other_org, key):
    add(other_org, api_key_create(org=other_org, name="k").api_key, 5, at=D)
    add(org, key, 1, at=D)
    roll()
    assert selectors.period_figures(org=org, start=D, end=D + timedelta(days=1)).requests == 1
    assert [row.figures.requests for row in selectors.usage_by_model(org=org, start=D, end=D + timedelta(days=1))] == [1]


def test_a_record_at_0330_utc_belongs_to_the_previous_local_day_in_new_york(org, key):
    add(org, key, 1, at=datetime(2031, 5, 10, 3, 30, tzinfo=UTC))  # 23:30 on 9 May in New York (EDT)
    add(org, key, 2, at=datetime(2031, 5, 10, 4, 30, tzinfo=UTC))  # 00:30 on 10 May
    roll()
    start = datetime(2031, 5, 9, tzinfo=NY)
    series = selectors.usage_series(org=org, start=start, end=start + timedelta(days=2), grain="day", tz=NY)
    assert [(point.start.date().isoformat(), point.figures.requests) for point in series] == [
        ("2031-05-09", 1), ("2031-05-10", 2)]
    assert series[0].start == datetime(2031, 5, 9, 4, tzinfo=UTC)


def test_the_hourly_series_has_every_hour_and_sums_to_the_period(org, key):
    add(org, key, 3, at=D + timedelta(hours=5, minutes=59))
    add(org, key, 1, at=D + timedelta(hours=7))
    roll()
    series = selectors.usage_series(org=org, start=D, end=D + timedelta(days=1), grain="hour", tz=NY)
    assert len(series) == 24
    assert [point.figures.requests for point in series][5:8] == [3, 0, 1]
    assert series[5].start.hour == 1  # 05:00 UTC is 01:00 in New York


def test_day_buckets_follow_daylight_saving_time(org, key):
    # New York moves to EDT on 9 March 2031: that local day has 23 hours.
    add(org, key, 1, at=datetime(2031, 3, 9, 4, 30, tzinfo=UTC))   # 23:30 EST on the 8th
    add(org, key, 1, at=datetime(2031, 3, 10, 3, 30, tzinfo=UTC))  # 23:30 EDT on the 9th
    add(org, key, 1, at=datetime(2031, 3, 10, 4, 30, tzinfo=UTC))  # 00:30 EDT on the 10th
    usage_rollup_hours(datetime(2031, 3, 1, tzinfo=UTC), datetime(2031, 3, 20, tzinfo=UTC))
    start = datetime(2031, 3, 8, tzinfo=NY)
    series = selectors.usage_series(org=org, start=start, end=datetime(2031, 3, 11, tzinfo=NY), grain="day", tz=NY)
    assert [point.figures.requests for point in series] == [1, 1, 1]


def test_month_to_date_reads_rollups_then_the_records_since_the_last_run(org, key):
    now = datetime(2031, 5, 10, 12, 30, tzinfo=UTC)
    add(org, key, 7, at=datetime(2031, 5, 1, tzinfo=UTC))
    add(org, key, 3, at=datetime(2031, 5, 10, 12, 10, tzinfo=UTC), status="client_gone")  # in the open hour
    add(org, key, 5, at=datetime(2031, 4, 30, 23, 59, tzinfo=UTC))  # last month
    roll(end=now, now=datetime(2031, 5, 10, 11, 40, tzinfo=UTC))  # the last run: before the open hour began
    add(org, key, 2, at=datetime(2031, 5, 10, 11, 50, tzinfo=UTC))  # since the run: not rolled up yet
    mtd = selectors.month_to_date(org=org, now=now)
    records = selectors.usage_figures(org=org, start=datetime(2031, 5, 1, tzinfo=UTC), end=now)
    assert mtd.figures == records  # nothing behind the records
    assert RollupProgress.objects.get().rolled_up_before == datetime(2031, 5, 10, 11, tzinfo=UTC)
    assert mtd.figures.requests == 12 and mtd.figures.cancelled == 3
    assert (mtd.start, mtd.end) == (datetime(2031, 5, 1, tzinfo=UTC), datetime(2031, 6, 1, tzinfo=UTC))


def test_the_projection_is_linear_to_the_end_of_the_utc_month(org, key):
    add(org, key, 10, at=datetime(2031, 6, 1, 1, tzinfo=UTC))  # $1.00 in June's first 5 days
    roll(datetime(2031, 6, 1, tzinfo=UTC), datetime(2031, 6, 2, tzinfo=UTC))
    mtd = selectors.month_to_date(org=org, now=datetime(2031, 6, 6, tzinfo=UTC))
    assert mtd.figures.cost_usd == Decimal("1.0")
    assert mtd.projected_cost_usd == Decimal("6.000000")  # 30 days / 5 days elapsed
    assert mtd.projected_requests == 60


def test_the_projection_at_the_first_instant_of_a_month_is_the_figure_itself(org):
    mtd = selectors.month_to_date(org=org, now=datetime(2031, 6, 1, tzinfo=UTC))
    assert mtd.projected_cost_usd == Decimal(0) and mtd.projected_requests == 0


@pytest.mark.parametrize("mark", [None, D, D + timedelta(hours=2), D + timedelta(days=2, hours=5), D + timedelta(days=9)])
def test_every_read_equals_the_records_wherever_the_rollups_end(org, key, mark):
    """A New York week (local midnights at 04:00 UTC): whole UTC days from the day facets,
    the hours around them from the detailed rollups, the records after the mark."""
    other = api_key_create(org=org, name="other").api_key
    route = Route.objects.create(org=org, alias="smart")
    for hours in range(0, 24 * 8, 5):
        add(org, key if hours % 2 else other, 1 + hours % 3, at=D + timedelta(hours=hours, minutes=hours % 60),
            end_user=f"user-{hours % 4}" if hours % 3 else "", via_route=route if hours % 7 == 0 else None,
            status="upstream_error" if hours % 11 == 0 else "success", cost_usd=Decimal("0.000000000007") * hours)
    roll(D - timedelta(days=1), D + timedelta(days=10))
    start, end = datetime(2031, 5, 10, tzinfo=NY), datetime(2031, 5, 17, tzinfo=NY)
    raw = selectors.usage_figures(org=org, start=start, end=end)
    assert raw.requests > 50 and raw.errors
    mark = mark or datetime(2099, 1, 1, tzinfo=UTC)  # None: every hour read from the rollups; D: none
    assert selectors.period_figures(org=org, start=start, end=end, mark=mark) == raw
    series = selectors.usage_series(org=org, start=start, end=end, grain="day", tz=NY, mark=mark)
    total = selectors.ZERO
    for point in series:
        total = selectors.add_figures(total, point.figures)
    assert total == raw and len(series) == 7
    found = selectors.breakdowns(org=org, start=start, end=end, mark=mark)
    for name, rows in found.items():
        total = selectors.ZERO
        for row in rows:
            total = selectors.add_figures(total, row.figures)
        assert total == raw, name
    records = UsageRecord.objects.filter(org=org, started_at__gte=start, started_at__lt=end)
    assert {row.label: row.figures.requests for row in found["end_users"]} == {
        label or selectors.NO_END_USER: sum(r.end_user == label for r in records)
        for label in {r.end_user for r in records}}
    assert {row.key for row in found["keys"]} == {str(key.public_id), str(other.public_id)}
    assert {row.label for row in found["routes"]} == {"smart", selectors.NO_ROUTE}
