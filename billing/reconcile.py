"""Reconciliation: the hourly rollups and the billing reports checked against the raw
usage records, exactly (integer pico-dollars), by SQL aggregation on both sides.

- Rollups: per org x UTC hour, requests, tokens and cost of `UsageRollup`, then of the
  hour totals derived from it (`UsageHourTotal`, what the dashboard's figures read),
  against `UsageRecord` (a record written after its hour left the rollup grace window, a
  tampered or lost row).
- Reports: each report of a month that ended within the period against the raw sums of
  its month; for a final report, what it billed plus the adjustments for its month on
  other reports. The open month's draft is rebuilt every few minutes and not checked.

By default the period ends at the last hour beat no longer rebuilds (now minus the rollup
grace): a record written a minute ago is not yet a difference.

Every difference is audited (`billing.reconcile_difference`, in the org's chain).
`repair=True` rebuilds the hours that differ, then the draft reports; a final report is
never rebuilt: once its month's rollups are right again, the difference is billed on the
next draft as adjustment lines (billing/reports.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import BigIntegerField, Count, Sum
from django.utils import timezone

from billing.models import BillingReport, BillingReportLine, UsageHourTotal, UsageRecord, UsageRollup
from billing.reports import (
    ReportIsFinal, month_bounds, month_start, previous_month, report_build,
)
from billing.rollups import HOUR, HourUTC, ceil_hour, floor_hour, usage_rollup_hours
from billing.sums import cost_picos
from tenants.audit import record_event
from tenants.models import AuditEvent, Organization

FIGURES = ("requests", "prompt_tokens", "completion_tokens", "cost_picos")


@dataclass
class Difference:
    kind: str  # "rollup_hour", "hour_total" or "report"
    org_id: int
    period: str  # the hour or the month, ISO 8601
    expected: dict  # from the raw usage records
    found: dict  # in the rollups / the hour totals / the report
    report_status: str = ""


@dataclass
class ReconcileResult:
    start: datetime
    end: datetime
    differences: list[Difference] = field(default_factory=list)
    repaired_hours: int = 0
    rebuilt_reports: int = 0

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(),
                "differences": [asdict(d) for d in self.differences], "repaired_hours": self.repaired_hours,
                "rebuilt_reports": self.rebuilt_reports}


def _figures(row: dict | None) -> dict:
    row = row or {}
    return {name: int(row.get(name) or 0) for name in FIGURES}


def _raw_by_org_hour(start: datetime, end: datetime) -> dict:
    rows = (UsageRecord.objects.filter(started_at__gte=start, started_at__lt=end).order_by()
            .annotate(h=HourUTC("started_at")).values("org_id", "h")
            .annotate(requests=Count("pk"), prompt_tokens=Sum("prompt_tokens"),
                      completion_tokens=Sum("completion_tokens"),
                      cost_picos=Sum(cost_picos(), output_field=BigIntegerField())))
    return {(row["org_id"], floor_hour(row["h"])): _figures(row) for row in rows}


def _rollup_by_org_hour(model, start: datetime, end: datetime) -> dict:
    rows = (model.objects.filter(hour__gte=start, hour__lt=end).order_by().values("org_id", "hour")
            .annotate(requests=Sum("requests"), prompt_tokens=Sum("prompt_tokens"),
                      completion_tokens=Sum("completion_tokens"),
                      cost_picos=Sum("cost_picos", output_field=BigIntegerField())))
    return {(row["org_id"], floor_hour(row["hour"])): _figures(row) for row in rows}


def _raw_month(org_id: int, month) -> dict:
    start, end = month_bounds(month)
    # usage_org_started_idx
    return _figures(UsageRecord.objects.filter(org_id=org_id, started_at__gte=start, started_at__lt=end).aggregate(
        requests=Count("pk"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
        cost_picos=Sum(cost_picos(), output_field=BigIntegerField())))


def _reported_month(report: BillingReport) -> dict:
    found = {name: getattr(report, name) for name in FIGURES}
    if report.is_final:
        later = BillingReportLine.objects.filter(kind=BillingReportLine.Kind.ADJUSTMENT, usage_month=report.month,
                                                 report__org_id=report.org_id).aggregate(
            requests=Sum("requests"), prompt_tokens=Sum("prompt_tokens"), completion_tokens=Sum("completion_tokens"),
            cost_picos=Sum("cost_picos"))
        for name, value in _figures(later).items():
            found[name] += value
    return found


def billing_reconcile(*, start: datetime | None = None, end: datetime | None = None, repair: bool = False,
                      now: datetime | None = None) -> ReconcileResult:
    """Check [start, end) (whole hours; default: the previous month's start to now minus
    the rollup grace) and the reports of the months that ended in it. Audits each difference; repairs if asked."""
    now = now or timezone.now()
    start = floor_hour(start or month_bounds(previous_month(month_start(now)))[0])
    # By default only settled hours: beat still rebuilds those within the rollup grace,
    # and a record written a moment ago is not a difference yet.
    end = ceil_hour(end) if end else floor_hour(now - timedelta(seconds=settings.USAGE_ROLLUP_GRACE_SECONDS))
    result = ReconcileResult(start=start, end=end)
    if start >= end:
        return result

    # The rollups, then the hour totals, against the records; an hour already found wrong in
    # the rollups is one difference, not two (its rebuild repairs both).
    raw = _raw_by_org_hour(start, end)
    wrong: set = set()
    for kind, model in (("rollup_hour", UsageRollup), ("hour_total", UsageHourTotal)):
        rolled = _rollup_by_org_hour(model, start, end)
        for key in sorted((set(raw) | set(rolled)) - wrong):
            expected, found = _figures(raw.get(key)), _figures(rolled.get(key))
            if expected != found:
                wrong.add(key)
                result.differences.append(Difference(kind=kind, org_id=key[0], period=key[1].isoformat(),
                                                     expected=expected, found=found))

    # Reports of the months that ended by `end` (the open month's draft moves anyway).
    reports = BillingReport.objects.filter(month__gte=month_start(start), month__lt=month_start(end)).order_by(
        "org_id", "month")
    for report in reports:
        expected, found = _raw_month(report.org_id, report.month), _reported_month(report)
        if expected != found:
            result.differences.append(Difference(kind="report", org_id=report.org_id, period=report.month.isoformat(),
                                                 expected=expected, found=found, report_status=report.status))

    orgs = Organization.objects.in_bulk({d.org_id for d in result.differences})
    for difference in result.differences:
        with transaction.atomic():
            record_event(org=orgs[difference.org_id], actor_type=AuditEvent.ActorType.SYSTEM,
                         action="billing.reconcile_difference", target_type=difference.kind,
                         target_id=difference.period,
                         data={"expected": difference.expected, "found": difference.found,
                               "report_status": difference.report_status, "repair": repair})
    if repair and result.differences:
        _repair(result, orgs, now)
    return result


def _repair(result: ReconcileResult, orgs: dict, now: datetime) -> None:
    hours = sorted({datetime.fromisoformat(d.period) for d in result.differences
                    if d.kind in ("rollup_hour", "hour_total")})
    for hour in hours:
        usage_rollup_hours(hour, hour + HOUR)
    result.repaired_hours = len(hours)
    # Every org whose rollups or reports moved: rebuild its drafts (which also bills the
    # late usage of its final months as adjustments on the earliest later draft).
    touched = {d.org_id for d in result.differences}
    for org_id in sorted(touched):
        org = orgs[org_id]
        months = set(BillingReport.objects.filter(org=org, status=BillingReport.Status.DRAFT)
                     .values_list("month", flat=True))
        if BillingReport.objects.filter(org=org, status=BillingReport.Status.FINAL).exists():
            months.add(month_start(now))  # a draft to carry the adjustments
        for month in sorted(months):
            try:
                report_build(org=org, month=month, now=now)
            except ReportIsFinal:
                continue
            result.rebuilt_reports += 1
