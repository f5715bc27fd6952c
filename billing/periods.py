"""The usage page's period: a preset or a custom range of local dates, in the org's
time zone, read from the query string (`UsagePeriodForm`) and turned into an aware
[start, end) for the selectors (`Period`)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo

from django import forms

from billing.rollups import ceil_hour

MAX_DAYS = 366
# Up to this long, the series is by hour; longer, by day.
HOURLY_UP_TO = timedelta(days=2)

PRESETS = {
    "today": "Today",
    "7d": "Last 7 days",
    "month": "This month",
    "last_month": "Last month",
    "30d": "Last 30 days",
    "custom": "Custom range",
}
DEFAULT = "month"


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC, from local dates [first_day, last_day] of `tz`; a period
    reaching today ends at the end of the current hour (nothing is recorded later)."""
    preset: str
    tz: ZoneInfo
    first_day: date
    last_day: date
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return PRESETS[self.preset]

    @property
    def grain(self) -> str:
        return "hour" if self.end - self.start <= HOURLY_UP_TO else "day"

    def as_query(self) -> dict[str, str]:
        query = {"period": self.preset}
        if self.preset == "custom":
            query.update(since=self.first_day.isoformat(), until=self.last_day.isoformat())
        return query


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


def period_of(preset: str, *, now: datetime, tz: ZoneInfo, since: date | None = None,
              until: date | None = None) -> Period:
    today = now.astimezone(tz).date()
    if preset == "today":
        first, last = today, today
    elif preset == "7d":
        first, last = today - timedelta(days=6), today
    elif preset == "30d":
        first, last = today - timedelta(days=29), today
    elif preset == "month":
        first, last = today.replace(day=1), today
    elif preset == "last_month":
        last = today.replace(day=1) - timedelta(days=1)
        first = last.replace(day=1)
    elif preset == "custom":
        first, last = since, until
    else:
        raise ValueError(f"unknown period {preset!r}")
    # In UTC: arithmetic on two datetimes of one ZoneInfo is wall-clock time (a 23-hour
    # day would count 24).
    start = _midnight(first, tz).astimezone(dt_timezone.utc)
    end = _midnight(last + timedelta(days=1), tz).astimezone(dt_timezone.utc)
    end = min(end, max(ceil_hour(now), start))
    return Period(preset=preset, tz=tz, first_day=first, last_day=last, start=start, end=end)


class UsagePeriodForm(forms.Form):
    period = forms.ChoiceField(choices=list(PRESETS.items()), required=False, initial=DEFAULT)
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}),
                            input_formats=["%Y-%m-%d"])
    until = forms.DateField(required=False, label="To (inclusive)", widget=forms.DateInput(attrs={"type": "date"}),
                            input_formats=["%Y-%m-%d"])

    def __init__(self, *args, tz: ZoneInfo, now: datetime, **kwargs):
        super().__init__(*args, **kwargs)
        self.tz, self.now = tz, now

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        # Preset links carry no dates; a range without a preset is a custom one.
        preset = data.get("period") or ("custom" if since or until or "since" in self.errors
                                        or "until" in self.errors else DEFAULT)
        if preset == "custom":
            if self.errors:
                return data
            if not since or not until:
                raise forms.ValidationError("A custom range needs both a first and a last day.")
            if since > until:
                raise forms.ValidationError("The first day must not be after the last day.")
            if (until - since).days + 1 > MAX_DAYS:
                raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
            if since > self.now.astimezone(self.tz).date():
                raise forms.ValidationError("The range starts in the future.")
            preset = "custom"
        data["period"] = preset
        return data

    def to_period(self) -> Period:
        data = self.cleaned_data
        return period_of(data["period"], now=self.now, tz=self.tz, since=data.get("since"), until=data.get("until"))
