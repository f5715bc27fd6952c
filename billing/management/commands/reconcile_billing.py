"""``manage.py reconcile_billing``: check rollups and reports against the raw usage."""
from __future__ import annotations

from django.core.management.base import BaseCommand

from billing.management.commands.rollup_usage import _moment
from billing.reconcile import billing_reconcile


class Command(BaseCommand):
    help = (
        "Compare the hourly usage rollups (per org and hour) and the billing reports of closed months with the "
        "raw usage records, exactly; print and audit every difference. --repair rebuilds the hours and draft "
        "reports that differ; a final report is never rebuilt (its difference is billed as adjustment lines on "
        "the next draft). Default period: from the start of the previous UTC month to now minus "
        "OPENCLAW_ROLLUP_GRACE_SECONDS (the hours beat no longer rebuilds)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--since", help="start, ISO 8601 (default: the previous month's first day)")
        parser.add_argument("--until", help="end, ISO 8601, rounded up to the hour (default: now minus the rollup grace)")
        parser.add_argument("--repair", action="store_true", help="rebuild what differs (never a final report)")

    def handle(self, *args, since=None, until=None, repair=False, **options):
        start = _moment(since, "--since") if since else None
        end = _moment(until, "--until") if until else None
        result = billing_reconcile(start=start, end=end, repair=repair)
        for d in result.differences:
            what = f"report {d.period} ({d.report_status})" if d.kind == "report" else f"rollup hour {d.period}"
            delta = ", ".join(f"{name} {d.expected[name] - d.found[name]:+d}" for name in d.expected
                              if d.expected[name] != d.found[name])
            self.stdout.write(f"org {d.org_id}: {what}: raw - recorded: {delta}")
        self.stdout.write(
            f"Checked {result.start.isoformat()} to {result.end.isoformat()}: {len(result.differences)} difference(s)"
            + (f"; rebuilt {result.repaired_hours} hour(s) and {result.rebuilt_reports} draft report(s)." if repair
               else ".")
        )
        if result.differences and not repair:
            raise SystemExit(1)
