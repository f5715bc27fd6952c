"""Usage rollups (billing/rollups.py): hourly rows by every dimension and the daily ones
derived from them equal the raw usage exactly, on SQLite as on PostgreSQL; rebuilding
is idempotent; the hour of a record is its started_at hour (UTC), across midnight too;
records written late within the grace window reach their hour on beat's next run, older
ones through `manage.py rollup_usage`."""
from __future__ import annotations

import io
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction

from billing import tasks
from billing.models import (CANCELLED_STATUSES, ERROR_STATUSES, RollupProgress, UsageDailyRollup, UsageDayFacet,
                            UsageHourTotal, UsageRecord, UsageRollup)
from billing.rollups import rolled_up_before, usage_rollup_hours, usage_rollup_recent
from billing.services import usage_records_write
from catalog.models import Route
from tenants.services import api_key_create
from tests.support.usage import draft_for

pytestmark = [pytest.mark.django_db]

D = datetime(2031, 5, 1, tzinfo=timezone.utc)
PICO = Decimal(10) ** 12
HOURLY_FIELDS = ["org_id", "hour", "api_key_id", "deployment_id", "deployment_name", "end_user", "requested_model",
                 "via_route_id", "status", "requests", "prompt_tokens", "completion_tokens", "cost_picos"]
DAILY_FIELDS = ["org_id", "api_key_id", "deployment_name", "day", "requests", "prompt_tokens", "completion_tokens",
                "cost_picos"]


def write(issued_key, count=1, **fields):
    drafts = [draft_for(issued_key, **fields) for _ in range(count)]
    usage_records_write(drafts)
    return drafts


def hourly_rows():
    return sorted(UsageRollup.objects.values_list(*HOURLY_FIELDS), key=repr)


def daily_rows():
    return sorted(UsageDailyRollup.objects.values_list(*DAILY_FIELDS), key=repr)


@pytest.mark.parametrize("cost, total", [(Decimal("0.1"), Decimal("100")), (Decimal("1E-9"), Decimal("0.000001"))])
def test_a_thousand_costs_sum_exactly_in_the_hour_and_the_day(issued_key, cost, total):
    write(issued_key, 1000, cost_usd=cost, started_at=D + timedelta(hours=3, minutes=7))
    run = usage_rollup_hours(D, D + timedelta(days=1))
    assert (run.hourly_rows, run.daily_rows) == (1, 1)
    [hour] = UsageRollup.objects.all()
    assert hour.hour == D + timedelta(hours=3)
    assert hour.cost_picos == int(total * PICO) and hour.cost_usd == total and hour.requests == 1000
    [day] = UsageDailyRollup.objects.all()
    assert day.day == D.date() and day.cost_picos == int(total * PICO) and day.cost_usd == total


def test_the_rollup_equals_the_raw_sums_on_every_dimension(issued_key, org, other_org, make_deployment):
    other_key = api_key_create(org=org, name="batch")
    outsider_key = api_key_create(org=other_org, name="theirs")
    fast, slow = make_deployment("mock-fast"), make_deployment("mock-slow")
    route = Route.objects.create(org=org, alias="general")
    drafts = []
    for i in range(60):
        key = (issued_key, other_key, issued_key, outsider_key)[i % 4]
        deployment = (fast, slow, None)[i % 3]
        drafts.append(draft_for(
            key, started_at=D + timedelta(hours=i % 4, minutes=i), end_user=("", "alice", "bob")[(i // 2) % 3],
            requested_model=("general", "mock-fast")[i % 5 == 0], deployment_id=deployment and deployment.pk,
            deployment_name=deployment.name if deployment else "", via_route_id=route.pk if i % 4 else None,
            status=("completed", "upstream_error", "cancelled", "completed", "rejected")[i % 5],
            prompt_tokens=i, completion_tokens=2 * i, cost_usd=Decimal(i) / 1000 + Decimal("0.000000000001"),
        ))
    usage_records_write(drafts)
    usage_rollup_hours(D, D + timedelta(hours=4))

    def hour_of(draft):
        return draft.started_at.replace(minute=0)

    for dimension, of_draft in {
        "org_id": lambda d: d.org_id, "hour": hour_of, "api_key_id": lambda d: d.api_key_id,
        "deployment_id": lambda d: d.deployment_id, "deployment_name": lambda d: d.deployment_name,
        "end_user": lambda d: d.end_user, "requested_model": lambda d: d.requested_model,
        "via_route_id": lambda d: d.via_route_id, "status": lambda d: d.status,
    }.items():
        expected = defaultdict(lambda: [0, 0, 0, 0])
        for draft in drafts:
            sums = expected[of_draft(draft)]
            for index, value in enumerate((1, draft.prompt_tokens, draft.completion_tokens, draft.cost_usd * PICO)):
                sums[index] += value
        got = defaultdict(lambda: [0, 0, 0, 0])
        for row in UsageRollup.objects.values(dimension, "requests", "prompt_tokens", "completion_tokens",
                                              "cost_picos"):
            sums = got[row[dimension]]
            for index, name in enumerate(("requests", "prompt_tokens", "completion_tokens", "cost_picos")):
                sums[index] += row[name]
        assert dict(got) == {k: [int(v) for v in sums] for k, sums in expected.items()}, dimension
    # The daily rollup is the hourly one summed by day.
    days = list(UsageDailyRollup.objects.all())
    assert sum(r.requests for r in days) == 60
    assert sum(r.cost_picos for r in days) == int(sum(d.cost_usd for d in drafts) * PICO)
    assert UsageDailyRollup.objects.count() == UsageDailyRollup.objects.values(
        "api_key", "deployment_name").distinct().count()


def test_rebuilding_a_period_twice_gives_the_same_rows(issued_key):
    for hour in range(5):
        write(issued_key, 3, started_at=D + timedelta(hours=hour, seconds=hour), end_user=f"user-{hour % 2}")
    first = usage_rollup_hours(D, D + timedelta(hours=5))
    rows, days = hourly_rows(), daily_rows()
    again = usage_rollup_hours(D, D + timedelta(hours=5))
    assert first == again and hourly_rows() == rows and daily_rows() == days
    assert len(rows) == 5 and days[0][4] == 15
    # A narrower rebuild inside the day leaves the day's other hours and its total alone.
    usage_rollup_hours(D + timedelta(hours=2), D + timedelta(hours=3))
    assert hourly_rows() == rows and daily_rows() == days


def test_a_period_is_whole_hours_and_must_be_aware_and_not_empty():
    run = usage_rollup_hours(D + timedelta(minutes=59), D + timedelta(hours=1, seconds=1))
    assert (run.start, run.end) == (D, D + timedelta(hours=2))
    with pytest.raises(ValueError, match="aware"):
        usage_rollup_hours(datetime(2031, 5, 1), D)
    with pytest.raises(ValueError, match="empty period"):
        usage_rollup_hours(D, D)


def test_records_either_side_of_midnight_land_in_their_own_hour_and_day_and_the_run_after_midnight_fixes_the_last_hour(
        issued_key):
    before = D + timedelta(hours=23, minutes=59, seconds=59, microseconds=900_000)
    midnight = D + timedelta(days=1)
    usage_rollup_recent(now=D + timedelta(hours=23, minutes=59), grace_seconds=7200)  # the last run of the day
    assert not UsageRollup.objects.exists()
    write(issued_key, started_at=before, cost_usd=Decimal("0.1"))
    write(issued_key, started_at=midnight, cost_usd=Decimal("0.2"))
    run = usage_rollup_recent(now=midnight + timedelta(seconds=30), grace_seconds=7200)
    assert (run.start, run.end) == (midnight - timedelta(hours=2), midnight + timedelta(hours=1))
    assert dict(UsageRollup.objects.values_list("hour", "requests")) == {
        D + timedelta(hours=23): 1, midnight: 1}
    assert {(r.day, r.requests, r.cost_usd) for r in UsageDailyRollup.objects.all()} == {
        (D.date(), 1, Decimal("0.1")), (midnight.date(), 1, Decimal("0.2"))}


def test_a_late_record_within_the_grace_reaches_its_hour_and_an_older_one_needs_the_command(issued_key):
    now = D + timedelta(hours=12, minutes=10)
    write(issued_key, started_at=now - timedelta(minutes=5))
    usage_rollup_recent(now=now, grace_seconds=7200)
    # A reaped lease's record, then a dead-letter replay of one from before the grace window.
    write(issued_key, started_at=now - timedelta(minutes=95), completion_tokens=7)
    write(issued_key, started_at=now - timedelta(hours=5), completion_tokens=9)
    usage_rollup_recent(now=now + timedelta(minutes=5), grace_seconds=7200)
    assert dict(UsageRollup.objects.values_list("hour", "completion_tokens")) == {
        D + timedelta(hours=12): 5, D + timedelta(hours=10): 7}
    assert UsageDailyRollup.objects.get().requests == 2

    out = io.StringIO()
    call_command("rollup_usage", "--since", "2031-05-01", "--until", "2031-05-02T00:00:00+00:00", stdout=out)
    assert "3 hourly rows, 1 daily rows" in out.getvalue()
    assert UsageRollup.objects.get(hour=D + timedelta(hours=7)).completion_tokens == 9
    assert UsageDailyRollup.objects.get().requests == UsageRecord.objects.count() == 3


def test_the_command_reads_times_without_an_offset_as_utc_and_refuses_bad_ones(issued_key):
    write(issued_key, started_at=D + timedelta(hours=1, minutes=30))
    out = io.StringIO()
    call_command("rollup_usage", "--since", "2031-05-01T01:10", "--until", "2031-05-01T01:20", stdout=out)
    assert out.getvalue().startswith("Rebuilt usage rollups from 2031-05-01T01:00:00+00:00 to "
                                     "2031-05-01T02:00:00+00:00: 1 hourly rows, 1 daily rows.")
    with pytest.raises(CommandError, match="--since: not an ISO 8601"):
        call_command("rollup_usage", "--since", "yesterday")
    with pytest.raises(CommandError, match="empty period"):
        call_command("rollup_usage", "--since", "2031-05-02", "--until", "2031-05-01")


def test_the_beat_task_rebuilds_the_recent_hours_and_the_old_task_name_still_runs(issued_key, settings):
    from django.utils import timezone as dj_timezone

    write(issued_key, started_at=dj_timezone.now() - timedelta(minutes=30))
    result = tasks.rollup_usage.apply().get()
    assert result["hourly_rows"] >= 1 and result["daily_rows"] >= 1
    assert sum(UsageRollup.objects.values_list("requests", flat=True)) == 1
    assert settings.CELERY_BEAT_SCHEDULE["rollup-usage"]["task"] == "billing.tasks.rollup_usage"
    assert tasks.rollup_usage_day.name == "billing.tasks.rollup_usage_day"


def test_a_second_row_for_the_same_hour_and_dimensions_is_refused_even_with_no_deployment_or_route(issued_key):
    write(issued_key, started_at=D)
    usage_rollup_hours(D, D + timedelta(hours=1))
    row = UsageRollup.objects.get()
    assert row.deployment_id is None and row.via_route_id is None
    row.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageRollup.objects.bulk_create([row])


def test_an_hour_without_records_is_emptied_by_its_rebuild(issued_key):
    [draft] = write(issued_key, started_at=D)
    usage_rollup_hours(D, D + timedelta(hours=1))
    UsageRecord.objects.filter(pk=draft.request_id).delete()
    run = usage_rollup_hours(D, D + timedelta(hours=1))
    assert (run.hourly_rows, run.daily_rows) == (0, 0)
    assert not UsageRollup.objects.exists() and not UsageDailyRollup.objects.exists()


def test_platform_operators_see_both_rollups_in_the_admin_with_exact_costs(issued_key, client):
    from django.contrib.auth import get_user_model

    write(issued_key, 10, cost_usd=Decimal("0.1"), started_at=D + timedelta(hours=5))
    usage_rollup_hours(D, D + timedelta(days=1))
    client.force_login(get_user_model().objects.create_superuser("operator", "op@example.com", "pw-for-tests"))
    for url in ("/admin/billing/usagerollup/", "/admin/billing/usagedailyrollup/"):
        page = client.get(url)
        assert page.status_code == 200, url
        assert '<td class="field-cost">1</td>' in page.content.decode(), url


def test_hour_totals_and_day_facets_sum_the_detailed_rollups_exactly(issued_key, org):
    route = Route.objects.create(org=org, alias="smart")
    for hours in range(0, 60, 3):
        write(issued_key, 1 + hours % 4, started_at=D + timedelta(hours=hours, minutes=7), end_user=f"u{hours % 5}",
              status=("completed", "upstream_error", "cancelled", "client_gone")[hours % 4],
              via_route_id=route.pk if hours % 2 else None, cost_usd=Decimal("0.1") + Decimal(hours).scaleb(-12))
    usage_rollup_hours(D, D + timedelta(days=3))
    for hour, requests, errors, cancelled, picos in UsageHourTotal.objects.values_list(
            "hour", "requests", "errors", "cancelled", "cost_picos"):
        records = UsageRecord.objects.filter(started_at__gte=hour, started_at__lt=hour + timedelta(hours=1))
        assert requests == records.count()
        assert errors == records.filter(status="upstream_error").count()
        assert cancelled == records.filter(status__in=["cancelled", "client_gone"]).count()
        assert picos == sum(int(r.cost_usd * PICO) for r in records)
    days = defaultdict(lambda: defaultdict(int))
    for facet, day, value, requests, picos in UsageDayFacet.objects.values_list(
            "facet", "day", "value", "requests", "cost_picos"):
        days[(facet, day)]["requests"] += requests
        days[(facet, day)]["picos"] += picos
        if facet == "end_user":
            assert requests == UsageRecord.objects.filter(started_at__date=day, end_user=value).count()
        if facet == "route":
            assert value in ("", str(route.pk))
    assert {facet for facet, _ in days} == {"model", "key", "end_user", "route"}
    for (facet, day), sums in days.items():
        records = UsageRecord.objects.filter(started_at__date=day)
        assert sums == {"requests": records.count(), "picos": sum(int(r.cost_usd * PICO) for r in records)}, facet


FACET_FIELDS = ["org_id", "day", "facet", "value", "requests", "errors", "cancelled", "prompt_tokens",
                "completion_tokens", "cost_picos"]


def test_day_facets_equal_the_records_by_facet_and_value_with_empty_values_and_equal_texts_apart(
        issued_key, org, other_org, make_deployment):
    """Every facet row equals the records of its org, UTC day and value summed in Python:
    an end user "" and no route ("") are values of their own, and a key and a route with
    the same id, or an end user named as a model, stay apart under their own facets."""
    key_id = issued_key.api_key.pk
    twin = Route.objects.create(pk=key_id, org=org, alias="twin")  # its id reads as the key's
    other_key = api_key_create(org=org, name="batch")
    outsider = api_key_create(org=other_org, name="theirs")
    fast = make_deployment("mock-fast")
    for i in range(40):
        write((issued_key, other_key, issued_key, outsider)[i % 4], started_at=D + timedelta(hours=5 * i, minutes=i),
              end_user=("", "alice", "mock-fast", str(key_id))[i % 4],
              deployment_id=fast.pk if i % 3 else None, deployment_name=fast.name if i % 3 else "",
              requested_model=("general", "mock-fast")[i % 2], via_route_id=twin.pk if i % 5 < 2 else None,
              status=("completed", "upstream_error", "cancelled", "client_gone", "rejected")[i % 5],
              prompt_tokens=i, completion_tokens=3 * i, cost_usd=Decimal(i) / 7000 + Decimal("1E-12"))
    expected = defaultdict(lambda: [0] * 6)
    for r in UsageRecord.objects.all():
        values = {"model": r.deployment_name or r.requested_model, "key": str(r.api_key_id), "end_user": r.end_user,
                  "route": str(r.via_route_id or "")}
        for facet, value in values.items():
            sums = expected[(r.org_id, r.started_at.astimezone(timezone.utc).date(), facet, value)]
            for index, amount in enumerate((1, r.status in ERROR_STATUSES,
                                            r.status in CANCELLED_STATUSES, r.prompt_tokens,
                                            r.completion_tokens, int(r.cost_usd * PICO))):
                sums[index] += amount
    usage_rollup_hours(D, D + timedelta(days=9))
    rows = sorted(UsageDayFacet.objects.values_list(*FACET_FIELDS))
    assert rows == sorted((*scope, *sums) for scope, sums in expected.items())
    assert {(facet, value) for _, _, facet, value, *_ in rows} >= {
        ("end_user", ""), ("route", ""), ("key", str(key_id)), ("route", str(key_id)), ("end_user", str(key_id)),
        ("model", "mock-fast"), ("end_user", "mock-fast"), ("model", "general")}
    usage_rollup_hours(D, D + timedelta(days=9))
    assert sorted(UsageDayFacet.objects.values_list(*FACET_FIELDS)) == rows


def test_the_mark_moves_on_only_without_a_gap_and_beat_catches_up_after_being_down(issued_key):
    RollupProgress.objects.create(pk=1, rolled_up_before=D)
    usage_rollup_hours(D + timedelta(hours=2), D + timedelta(hours=5), now=D + timedelta(days=1))
    assert rolled_up_before() == D  # [D, D+2h) was not rebuilt: still not trusted
    usage_rollup_hours(D, D + timedelta(hours=3), now=D + timedelta(hours=2, minutes=30))
    assert rolled_up_before() == D + timedelta(hours=2)  # the open hour is never trusted
    # Beat was down for a day; a record from then arrived late. The next run starts at the mark.
    write(issued_key, started_at=D + timedelta(hours=6))
    now = D + timedelta(days=1, hours=3, minutes=20)
    run = usage_rollup_recent(now=now, grace_seconds=7200)
    assert run.start == D + timedelta(hours=2)
    assert UsageHourTotal.objects.get().hour == D + timedelta(hours=6)
    assert rolled_up_before() == D + timedelta(days=1, hours=3)


def test_the_first_beat_run_starts_from_the_first_usage_record(issued_key):
    write(issued_key, started_at=D + timedelta(hours=1, minutes=5))
    usage_rollup_recent(now=D + timedelta(days=2, minutes=1), grace_seconds=7200)
    assert UsageRollup.objects.get().hour == D + timedelta(hours=1)
    assert rolled_up_before() == D + timedelta(days=2)
