"""The usage page (billing/views/usage.py): the period picker (presets, custom range in
the org's time zone, invalid input is a 400 with form errors), the chart, the four
breakdowns, month to date; every table's CSV equals the page; the time zone form."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone as django_timezone

from billing.models import RollupProgress, UsageRecord
from billing.rollups import usage_rollup_hours
from tenants.models import AuditEvent
from tenants.services import api_key_create
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db
UTC = timezone.utc


@pytest.fixture
def personas(db):
    return make_personas()


def url(personas, query=""):
    return f"/orgs/{personas.org.slug}/usage/" + (f"?{query}" if query else "")


def csv_url(personas, query):
    return f"/orgs/{personas.org.slug}/usage/export.csv?{query}"


def add(org, count, *, at, key=None, **fields):
    key = key or api_key_create(org=org, name="k").api_key
    values = dict(org=org, api_key=key, requested_model="gpt-4o", deployment_name="gpt-4o", status="success",
                  prompt_tokens=100, completion_tokens=20, cost_usd=Decimal("0.0016"), started_at=at)
    values.update(fields)
    UsageRecord.objects.bulk_create([UsageRecord(**values) for _ in range(count)])
    return key


def roll(now):
    """Roll up the last 70 days as beat would have: trusted up to the open hour."""
    RollupProgress.objects.update_or_create(pk=1, defaults={"rolled_up_before": now - timedelta(days=70)})
    usage_rollup_hours(now - timedelta(days=70), now + timedelta(hours=2), now=now)


def owner(client, personas):
    return personas.client_for(client, "owner")


def test_this_month_is_shown_by_default_with_chart_tables_and_month_to_date(client, personas):
    now = django_timezone.now()
    add(personas.org, 3, at=now, end_user="alice")
    add(personas.org, 1, at=now, status="upstream_error", cost_usd=Decimal("0"))
    add(personas.org, 2, at=now, status="cancelled", cost_usd=Decimal("0"))
    roll(now)
    page = owner(client, personas).get(url(personas))
    assert page.status_code == 200
    html = page.content.decode()
    assert page.context["period"].preset == "month"
    assert page.context["figures"].requests == 6 and page.context["figures"].errors == 1
    assert page.context["figures"].cancelled == 2 and page.context["figures"].cost_usd == Decimal("0.0048")
    assert page.context["mtd"].figures == page.context["figures"]  # a UTC org: this month is the billing month
    assert '<svg class="chart spend"' in html and '<rect class="bar"' in html and "style=" not in html
    for table in ("models", "keys", "end_users", "routes"):
        assert f'id="usage-{table}"' in html and f"table={table}&amp;period=month" in html
    assert "alice" in html and "(no end user)" in html and '<span class="pill error">1</span>' in html


@pytest.mark.parametrize("preset, days", [("today", 1), ("7d", 7), ("30d", 30)])
def test_presets_cover_whole_local_days_up_to_now(client, personas, preset, days):
    personas.org.time_zone = "America/New_York"
    personas.org.save()
    page = owner(client, personas).get(url(personas, f"period={preset}"))
    assert page.status_code == 200
    period = page.context["period"]
    tz = ZoneInfo("America/New_York")
    today = django_timezone.now().astimezone(tz).date()
    assert (period.first_day, period.last_day) == (today - timedelta(days=days - 1), today)
    assert period.start == datetime(period.first_day.year, period.first_day.month, period.first_day.day, tzinfo=tz)
    assert period.end <= django_timezone.now() + timedelta(hours=1)
    hours = (period.end - period.start) // timedelta(hours=1)
    assert len(page.context["series"]) == (days if days > 2 else hours)  # today: by hour, up to this hour


def test_last_month_is_the_previous_local_calendar_month(client, personas):
    page = owner(client, personas).get(url(personas, "period=last_month"))
    period = page.context["period"]
    first_of_this = django_timezone.now().date().replace(day=1)
    assert period.last_day == first_of_this - timedelta(days=1) and period.first_day.day == 1
    assert period.end == datetime.combine(first_of_this, datetime.min.time(), tzinfo=ZoneInfo("UTC"))


def test_a_custom_range_is_read_in_the_orgs_time_zone(client, personas):
    personas.org.time_zone = "America/New_York"
    personas.org.save()
    add(personas.org, 1, at=datetime(2025, 5, 10, 3, 30, tzinfo=UTC))  # 9 May in New York
    add(personas.org, 2, at=datetime(2025, 5, 10, 4, 30, tzinfo=UTC))  # 10 May
    usage_rollup_hours(datetime(2025, 5, 9, tzinfo=UTC), datetime(2025, 5, 12, tzinfo=UTC))
    page = owner(client, personas).get(url(personas, "period=custom&since=2025-05-10&until=2025-05-10"))
    assert page.status_code == 200
    assert page.context["figures"].requests == 2
    assert page.context["period"].grain == "hour" and len(page.context["series"]) == 24
    page = owner(client, personas).get(url(personas, "since=2025-05-09&until=2025-05-11"))  # no preset: custom
    assert page.context["period"].preset == "custom" and page.context["period"].grain == "day"
    assert [p.figures.requests for p in page.context["series"]] == [1, 2, 0]


@pytest.mark.parametrize("query, message", [
    ("period=custom&since=2025-05-10", "needs both"),
    ("period=custom&since=2025-05-10&until=2025-05-01", "must not be after"),
    ("period=custom&since=2020-01-01&until=2025-01-01", "at most 366 days"),
    ("period=custom&since=not-a-date&until=2025-01-01", "Enter a valid date"),
    ("period=yesterday", "Select a valid choice"),
    ("period=custom&since=2999-01-01&until=2999-01-02", "starts in the future"),
])
def test_an_invalid_period_is_a_400_with_the_forms_errors(client, personas, query, message):
    page = owner(client, personas).get(url(personas, query))
    assert page.status_code == 400
    assert message in page.content.decode()
    assert owner(client, personas).get(csv_url(personas, f"table=models&{query}")).status_code == 400


def test_an_unknown_csv_table_is_a_400(client, personas):
    response = owner(client, personas).get(csv_url(personas, "table=secrets"))
    assert response.status_code == 400 and b"table must be one of" in response.content


def _csv(response) -> list[dict]:
    """The rows of a streamed export (the async view's iterator, read to its end)."""
    async def read():
        return b"".join([chunk async for chunk in response.streaming_content])

    return list(csv.DictReader(io.StringIO(async_to_sync(read)().decode())))


def test_every_tables_csv_equals_the_page(client, personas):
    now = django_timezone.now()
    key = add(personas.org, 1000, at=now - timedelta(days=2), cost_usd=Decimal("0.1"), end_user="alice")
    add(personas.org, 3, at=now - timedelta(days=3), key=key, status="gateway_lost", end_user="=cmd")
    add(personas.org, 2, at=now, status="client_gone", deployment_name="", requested_model="mini")
    roll(now)
    signed_in = owner(client, personas)
    page = signed_in.get(url(personas, "period=30d"))
    for table in page.context["tables"]:
        response = signed_in.get(csv_url(personas, f"table={table['name']}&period=30d"))
        assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
        rows = _csv(response)
        assert len(rows) == len(table["rows"])
        for row, shown in zip(rows, table["rows"]):
            f = shown.figures
            assert row["id"] == shown.key or row["id"] == "'" + shown.key
            assert (int(row["requests"]), int(row["errors"]), int(row["cancelled"]), int(row["tokens_in"]),
                    int(row["tokens_out"]), Decimal(row["cost_usd"])) == (
                f.requests, f.errors, f.cancelled, f.prompt_tokens, f.completion_tokens, f.cost_usd)
    series = _csv(signed_in.get(csv_url(personas, "table=series&period=30d")))
    assert len(series) == len(page.context["series"]) == 30
    for row, point in zip(series, page.context["series"]):
        assert row["start"] == point.start.isoformat()
        assert (int(row["requests"]), Decimal(row["cost_usd"])) == (point.figures.requests, point.figures.cost_usd)
    assert sum(Decimal(row["cost_usd"]) for row in series) == page.context["figures"].cost_usd == Decimal("100.008")


def test_the_page_reads_a_bounded_number_of_queries_however_many_rows(client, personas, django_assert_max_num_queries):
    now = django_timezone.now()
    for index in range(40):
        add(personas.org, 3, at=now - timedelta(hours=index * 7), end_user=f"user-{index}",
            deployment_name=f"dep-{index % 9}", status=("success", "upstream_error", "cancelled")[index % 3])
    roll(now)
    signed_in = owner(client, personas)
    # Session, user, org; the rollups' mark; month to date, the series and the breakdowns:
    # rollups before the mark and records after it; key and route labels.
    with django_assert_max_num_queries(13):
        page = signed_in.get(url(personas, "period=30d"))
    assert page.status_code == 200 and len(page.context["tables"][2]["rows"]) == 40


def test_a_manager_sets_the_time_zone_and_it_is_audited(client, personas):
    response = owner(client, personas).post(url(personas, "period=7d"), {"time_zone": "Europe/Paris"})
    assert response.status_code == 302 and response["Location"].endswith("?period=7d")
    personas.org.refresh_from_db()
    assert personas.org.time_zone == "Europe/Paris"
    event = AuditEvent.objects.get(org=personas.org, action="org.time_zone")
    assert event.actor == personas.users["owner"].get_username()
    assert event.data == {"from": "UTC", "to": "Europe/Paris"}


def test_an_unknown_time_zone_is_refused_with_a_form_error(client, personas):
    response = owner(client, personas).post(url(personas), {"time_zone": "Mars/Olympus_Mons"})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    personas.org.refresh_from_db()
    assert personas.org.time_zone == "UTC"
    assert not AuditEvent.objects.filter(action="org.time_zone").exists()


def test_an_auditor_sees_the_time_zone_but_no_form(client, personas):
    html = personas.client_for(client, "auditor").get(url(personas)).content.decode()
    assert 'id="time-zone-form"' not in html and "owners and admins can change it" in html
    assert personas.client_for(client, "auditor").post(url(personas), {"time_zone": "Europe/Paris"}).status_code == 403


def test_a_member_sees_neither_the_page_nor_its_link(client, personas):
    member = personas.client_for(client, "member")
    assert member.get(url(personas)).status_code == 403
    assert member.get(csv_url(personas, "table=models")).status_code == 403
    assert "/usage/" not in member.get(f"/orgs/{personas.org.slug}/").content.decode()


def test_an_outsider_gets_404_for_the_page_and_the_csv(client, personas):
    outsider = personas.client_for(client, "outsider")
    assert outsider.get(url(personas)).status_code == 404
    assert outsider.get(csv_url(personas, "table=models")).status_code == 404
