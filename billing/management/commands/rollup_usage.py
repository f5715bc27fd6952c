"""``manage.py rollup_usage``: rebuild the usage rollups of any period."""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.rollups import usage_rollup_hours


def _moment(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{option}: not an ISO 8601 date or time: {text!r}") from None
    return moment.replace(tzinfo=dt_timezone.utc) if timezone.is_naive(moment) else moment


class Command(BaseCommand):
    help = (
        "Rebuild the hourly and daily usage rollups of every hour in [--since, --until) from the usage "
        "records (whole hours: --since is rounded down, --until up; a time without an offset is UTC). Beat "
        "recomputes only the hours within OPENCLAW_ROLLUP_GRACE_SECONDS; run this after writing older records "
        "(e.g. manage.py replay_usage of records from before the grace window). Safe to run again."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", required=True, help="start, ISO 8601 (e.g. 2026-11-30 or 2026-11-30T22:00Z)")
        parser.add_argument("--until", help="end, ISO 8601 (default: now, its hour included)")

    def handle(self, *args, since: str, until: str | None = None, **options):
        start = _moment(since, "--since")
        end = _moment(until, "--until") if until else timezone.now()
        try:
            run = usage_rollup_hours(start, end)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"Rebuilt usage rollups from {run.start.isoformat()} to {run.end.isoformat()}: "
            f"{run.hourly_rows} hourly rows, {run.daily_rows} daily rows."
        )
