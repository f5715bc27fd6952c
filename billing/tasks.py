"""Celery tasks: thin, idempotent, taking periods rather than objects."""
from __future__ import annotations

from datetime import date

from celery import shared_task
from django.utils import timezone

from billing.services import usage_rollup_day


@shared_task(name="billing.tasks.rollup_usage_day")
def rollup_usage_day(day: str | None = None) -> dict:
    """Rebuild one UTC day's usage rollups (default: today). Returns the day and row count."""
    target = date.fromisoformat(day) if day else timezone.now().date()
    rows = usage_rollup_day(day=target)
    return {"day": target.isoformat(), "rows": rows}
