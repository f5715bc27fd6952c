"""The usage page's periods (billing/periods.py): presets are whole local days of the
org's time zone, the current one up to the end of this hour."""
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from django.http import QueryDict

from billing.periods import UsagePeriodForm, period_of

NY = ZoneInfo("America/New_York")
NOW = datetime(2031, 1, 1, 2, 15, tzinfo=timezone.utc)  # still 31 Dec 2030 in New York


def test_today_in_new_york_is_still_the_last_day_of_the_year_until_0500_utc():
    period = period_of("today", now=NOW, tz=NY)
    assert period.first_day == period.last_day == date(2030, 12, 31)
    assert period.start == datetime(2030, 12, 31, 5, tzinfo=timezone.utc)
    assert period.end == datetime(2031, 1, 1, 3, tzinfo=timezone.utc)  # the end of the current hour
    assert period.grain == "hour"


def test_this_month_and_last_month_follow_the_local_calendar():
    this = period_of("month", now=NOW, tz=NY)
    assert (this.first_day, this.last_day) == (date(2030, 12, 1), date(2030, 12, 31))
    last = period_of("last_month", now=NOW, tz=NY)
    assert (last.first_day, last.last_day) == (date(2030, 11, 1), date(2030, 11, 30))
    assert last.end == datetime(2030, 12, 1, tzinfo=NY) and last.grain == "day"


def test_a_custom_range_across_the_spring_clock_change_has_a_23_hour_day():
    period = period_of("custom", now=NOW, tz=NY, since=date(2030, 3, 10), until=date(2030, 3, 10))
    assert period.end - period.start == timedelta(hours=23)


def test_dates_without_a_preset_are_a_custom_range_and_a_preset_ignores_none():
    form = UsagePeriodForm(QueryDict("since=2030-12-01&until=2030-12-03"), tz=NY, now=NOW)
    assert form.is_valid() and form.to_period().preset == "custom"
    form = UsagePeriodForm(QueryDict(""), tz=NY, now=NOW)
    assert form.is_valid() and form.to_period().preset == "month"
    form = UsagePeriodForm(QueryDict("period=7d&since=2030-01-01&until=2030-01-02"), tz=NY, now=NOW)
    assert form.is_valid() and form.to_period().first_day == date(2030, 12, 25)
