"""Writes to billing data: usage records and their rollups (built in billing/rollups.py)."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone as dt_timezone
from typing import Any

from django.db import IntegrityError
from django.utils import timezone

from billing.models import UsageRecord
from billing.rollups import usage_rollup_hours
from billing.usage import UsageDraft


def _columns(draft: UsageDraft) -> dict[str, Any]:
    fields = dict(draft.__dict__)
    fields.pop("lease", None)
    return fields


def usage_records_write(drafts: list[UsageDraft]) -> None:
    """Write finished requests' usage records. Idempotent on the request id: a
    record already written is left as it is.

    IntegrityError when a record is not there afterwards: SQLite's INSERT OR
    IGNORE (what `ignore_conflicts` becomes there) also skips, silently, a row
    that breaks a CHECK or NOT NULL constraint (a negative token count), where
    PostgreSQL's ON CONFLICT DO NOTHING raises. A refused record must be an error
    on both, or it would be lost without a word."""
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        [UsageRecord(**{**_columns(draft), "ended_at": draft.ended_at or now}) for draft in drafts],
        ignore_conflicts=True,
    )
    wanted = {draft.request_id for draft in drafts}
    missing = wanted - set(UsageRecord.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    if missing:
        raise IntegrityError(f"usage record(s) {', '.join(sorted(map(str, missing)))} refused by a constraint")


def usage_rollup_day(*, day: date) -> int:
    """Rebuild the hourly and daily rollups of one UTC day from usage records (exact,
    safe to run twice: billing/rollups.py). Returns the number of daily rows."""
    start = datetime(day.year, day.month, day.day, tzinfo=dt_timezone.utc)
    return usage_rollup_hours(start, start + timedelta(days=1)).daily_rows
