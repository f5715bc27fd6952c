"""Writes to billing data: usage records and their rollups."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone as dt_timezone
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Sum
from django.utils import timezone

from billing.models import UsageDailyRollup, UsageRecord
from billing.usage import UsageDraft
from catalog.money import ZERO


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
    """Rebuild the daily rollups of one UTC day from usage records. Safe to run twice."""
    start = datetime(day.year, day.month, day.day, tzinfo=dt_timezone.utc)
    end = start + timedelta(days=1)
    rows = (
        UsageRecord.objects.filter(started_at__gte=start, started_at__lt=end)
        .values("org_id", "api_key_id", "deployment_name")
        .annotate(requests=Count("pk"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
                  cost=Sum("cost_usd"))
    )
    now = timezone.now()
    with transaction.atomic():
        UsageDailyRollup.objects.filter(day=day).delete()
        UsageDailyRollup.objects.bulk_create(
            UsageDailyRollup(
                org_id=row["org_id"], api_key_id=row["api_key_id"], deployment_name=row["deployment_name"],
                day=day, requests=row["requests"], prompt_tokens=row["prompt"] or 0,
                completion_tokens=row["completion"] or 0, cost_usd=row["cost"] or ZERO, updated_at=now,
            )
            for row in rows
        )
    return len(rows)
