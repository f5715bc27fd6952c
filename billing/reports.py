"""Monthly billing reports (docs/billing.md).

A report is one org's bill for one UTC calendar month, built from the hourly usage
rollups (billing/rollups.py) by SQL aggregation: line items by deployment and the prices
applied, subtotals by API key and by end user, and adjustment lines. It is a draft,
rebuilt on every `reports_refresh` (idempotent: the same rollups give the same lines),
until the month has closed and BILLING_GRACE_SECONDS have passed; `report_finalize`
then builds it one last time and makes it final. Nothing changes a final report.

Late usage: a record of a month whose report is final (a dead-letter replay, a rollup
repaired by the reconcile) is billed on the earliest later draft as adjustment lines,
per deployment and prices, each carrying the month the usage belongs to. An adjustment
is (that month's rollup sums now) - (what final reports billed for that month: its own
lines plus adjustments on other final reports), so nothing is lost or counted twice.

Rounding: each billed line (deployment, adjustment) is rounded to cents once with
`catalog.money.invoice_amount`; the total is the sum of those rounded amounts.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone as dt_timezone

from django.conf import settings
from django.db import transaction
from django.db.models import BigIntegerField, Q, Sum
from django.utils import timezone

from billing.models import BillingReport, BillingReportLine, UsageRollup
from billing.rollups import lock_rollups
from catalog.money import invoice_amount
from tenants.audit import record_event
from tenants.models import AuditEvent, Organization

Kind = BillingReportLine.Kind


class ReportIsFinal(Exception):
    """A final report was asked to change."""


class ReportNotDue(Exception):
    """The report's month has not closed plus the grace window yet."""


def month_start(moment: datetime | date) -> date:
    """The first day of the UTC month of a moment (or a date)."""
    if isinstance(moment, datetime):
        if timezone.is_naive(moment):
            raise ValueError("moments must be aware")
        moment = moment.astimezone(dt_timezone.utc).date()
    return moment.replace(day=1)


def next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def previous_month(month: date) -> date:
    return (month.replace(day=1) - timedelta(days=1)).replace(day=1)


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) in UTC."""
    if month.day != 1:
        raise ValueError(f"a billing month is given by its first day, not {month.isoformat()}")
    start = datetime(month.year, month.month, 1, tzinfo=dt_timezone.utc)
    following = next_month(month)
    return start, datetime(following.year, following.month, 1, tzinfo=dt_timezone.utc)


def finalize_due_at(month: date) -> datetime:
    """When a month's report may become final: its end plus the grace window."""
    return month_bounds(month)[1] + timedelta(seconds=settings.BILLING_GRACE_SECONDS)


_SUMS = dict(requests=Sum("requests"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
             picos=Sum("cost_picos", output_field=BigIntegerField()))
_PRICE_KEYS = ("deployment_name", "input_price_per_mtok", "output_price_per_mtok")


def _month_rollups(org: Organization, month: date):
    start, end = month_bounds(month)
    # usage_rollup_org_hour_idx: WHERE org_id = ? AND hour >= ? AND hour < ?
    return UsageRollup.objects.filter(org=org, hour__gte=start, hour__lt=end).order_by()


def _line(kind, row: dict, **extra) -> BillingReportLine:
    picos = int(row["picos"] or 0)
    return BillingReportLine(kind=kind, requests=row["requests"] or 0, prompt_tokens=row["prompt"] or 0,
                             completion_tokens=row["completion"] or 0, cost_picos=picos,
                             amount_usd=invoice_amount(picos), **extra)


def _price_key(row: dict) -> tuple:
    # Prices come back as Decimal; normalise so 1.500000 and 1.5 are one key.
    return (row["deployment_name"],
            None if row["input_price_per_mtok"] is None else row["input_price_per_mtok"].normalize(),
            None if row["output_price_per_mtok"] is None else row["output_price_per_mtok"].normalize())


def _adjustment_months(report: BillingReport) -> list[date]:
    """The final months whose late usage this draft carries: those with no other draft
    between them and this report's month (late usage goes on the earliest later draft)."""
    finals = BillingReport.objects.filter(org_id=report.org_id, status=BillingReport.Status.FINAL,
                                          month__lt=report.month).values_list("month", flat=True)
    earlier_drafts = list(BillingReport.objects.filter(org_id=report.org_id, status=BillingReport.Status.DRAFT,
                                                       month__lt=report.month).values_list("month", flat=True))
    return sorted(m for m in finals if not any(m < draft for draft in earlier_drafts))


def billed_for_month(org: Organization, month: date, *, exclude_report: BillingReport | None = None) -> dict:
    """What final reports billed for a month's usage, by deployment and prices: the
    month's own deployment lines plus adjustments for it on final reports."""
    lines = BillingReportLine.objects.filter(
        Q(kind=Kind.DEPLOYMENT, report__month=month) | Q(kind=Kind.ADJUSTMENT, usage_month=month),
        report__org=org, report__status=BillingReport.Status.FINAL,
    )
    if exclude_report is not None:
        lines = lines.exclude(report=exclude_report)
    rows = lines.order_by().values(*_PRICE_KEYS).annotate(**_SUMS)
    return {_price_key(row): row for row in rows}


def _adjustment_lines(report: BillingReport) -> list[BillingReportLine]:
    lines = []
    for month in _adjustment_months(report):
        billed = billed_for_month(report.org, month, exclude_report=report)
        now = {_price_key(row): row for row in _month_rollups(report.org, month).values(*_PRICE_KEYS).annotate(**_SUMS)}
        for key in sorted(set(billed) | set(now), key=lambda k: (k[0], str(k[1]), str(k[2]))):
            delta = {field: int((now.get(key) or {}).get(field) or 0) - int((billed.get(key) or {}).get(field) or 0)
                     for field in ("requests", "prompt", "completion", "picos")}
            if any(delta.values()):
                lines.append(_line(Kind.ADJUSTMENT, delta, deployment_name=key[0], input_price_per_mtok=key[1],
                                   output_price_per_mtok=key[2], usage_month=month))
    return lines


def report_build(*, org: Organization, month: date, now: datetime | None = None) -> BillingReport:
    """Create or rebuild the draft report of `org` for `month` (its first day) from the
    rollups. Idempotent. Raises ReportIsFinal for a final report."""
    month_bounds(month)  # validates the month
    now = now or timezone.now()
    with transaction.atomic():
        lock_rollups()  # lines and totals from one state of the rollups
        report, _created = BillingReport.objects.select_for_update().get_or_create(org=org, month=month)
        if report.is_final:
            raise ReportIsFinal(f"the report of {month:%Y-%m} is final")
        return _rebuild(report, now)


def _rebuild(report: BillingReport, now: datetime) -> BillingReport:
    rollups = _month_rollups(report.org, report.month)
    lines = [
        _line(Kind.DEPLOYMENT, row, deployment_name=row["deployment_name"],
              input_price_per_mtok=row["input_price_per_mtok"], output_price_per_mtok=row["output_price_per_mtok"])
        for row in rollups.values(*_PRICE_KEYS).annotate(**_SUMS).order_by(*_PRICE_KEYS)
    ]
    lines += [_line(Kind.API_KEY, row, api_key_id=row["api_key"])
              for row in rollups.values("api_key").annotate(**_SUMS).order_by("api_key")]
    lines += [_line(Kind.END_USER, row, end_user=row["end_user"])
              for row in rollups.values("end_user").annotate(**_SUMS).order_by("end_user")]
    lines += _adjustment_lines(report)
    totals = rollups.aggregate(**_SUMS)
    report.requests = totals["requests"] or 0
    report.prompt_tokens = totals["prompt"] or 0
    report.completion_tokens = totals["completion"] or 0
    report.cost_picos = int(totals["picos"] or 0)
    report.total_usd = sum((line.amount_usd for line in lines if line.kind in BillingReportLine.BILLED_KINDS),
                           invoice_amount(0))
    report.built_at = now
    report.save()
    report.lines.all().delete()
    for line in lines:
        line.report = report
    BillingReportLine.objects.bulk_create(lines)
    return report


def report_finalize(*, report: BillingReport, now: datetime | None = None) -> BillingReport:
    """Build the report one last time and make it final, once its month has closed plus
    BILLING_GRACE_SECONDS. Audited. Raises ReportNotDue / ReportIsFinal."""
    now = now or timezone.now()
    with transaction.atomic():
        lock_rollups()
        report = BillingReport.objects.select_for_update().select_related("org").get(pk=report.pk)
        if report.is_final:
            raise ReportIsFinal(f"the report of {report.month:%Y-%m} is final")
        due = finalize_due_at(report.month)
        if now < due:
            raise ReportNotDue(f"the report of {report.month:%Y-%m} may become final from {due.isoformat()}")
        _rebuild(report, now)
        report.status = BillingReport.Status.FINAL
        report.finalized_at = now
        report.save(update_fields=["status", "finalized_at"])
        record_event(org=report.org, actor_type=AuditEvent.ActorType.SYSTEM, action="billing.report_finalized",
                     target_type="billing_report", target_id=str(report.public_id),
                     data={"month": report.month.isoformat(), "total_usd": str(report.total_usd),
                           "cost_picos": report.cost_picos})
    return report


def reports_refresh(*, now: datetime | None = None) -> dict:
    """What beat runs: build the drafts of the open and the previous month for every org
    with usage in them (or a draft already), then finalise every draft that is due, oldest
    first (so a finalised month's late usage finds the next draft)."""
    now = now or timezone.now()
    current = month_start(now)
    previous = previous_month(current)
    start, _ = month_bounds(previous)
    org_ids = set(UsageRollup.objects.filter(hour__gte=start).order_by().values_list("org_id", flat=True).distinct())
    org_ids |= set(BillingReport.objects.filter(status=BillingReport.Status.DRAFT).values_list("org_id", flat=True))
    built = finalized = 0
    for org in Organization.objects.filter(pk__in=org_ids).order_by("pk"):
        for report in BillingReport.objects.filter(org=org, status=BillingReport.Status.DRAFT,
                                                   month__lt=previous).order_by("month"):
            report_finalize(report=report, now=now)  # drafts left behind (e.g. the service was down)
            finalized += 1
        if not BillingReport.objects.filter(org=org, month=previous, status=BillingReport.Status.FINAL).exists():
            report = report_build(org=org, month=previous, now=now)
            built += 1
            if now >= finalize_due_at(previous):
                report_finalize(report=report, now=now)
                finalized += 1
        report_build(org=org, month=current, now=now)
        built += 1
    return {"orgs": len(org_ids), "built": built, "finalized": finalized}


def report_tables(report: BillingReport) -> dict:
    """The report's lines grouped as its page and CSV show them."""
    tables = defaultdict(list)
    for line in report.lines.select_related("api_key").order_by("kind", "usage_month", "deployment_name",
                                                                  "input_price_per_mtok", "end_user", "pk"):
        tables[line.kind].append(line)
    return {"lines": tables[Kind.DEPLOYMENT], "keys": tables[Kind.API_KEY], "end_users": tables[Kind.END_USER],
            "adjustments": tables[Kind.ADJUSTMENT]}


# --- The report's tables, as the page and its CSV show them -------------------------
# One definition for both, so the CSV's numbers are the page's: each row is a list of
# cells; amounts are Decimal dollars and cents (the page formats them with `usd`).
REPORT_TABLES = ("lines", "keys", "end_users", "adjustments")
TABLE_HEADERS = {
    "lines": ["deployment", "input_usd_per_mtok", "output_usd_per_mtok", "requests", "prompt_tokens",
              "completion_tokens", "amount_usd"],
    "keys": ["api_key", "requests", "prompt_tokens", "completion_tokens", "amount_usd"],
    "end_users": ["end_user", "requests", "prompt_tokens", "completion_tokens", "amount_usd"],
    "adjustments": ["usage_month", "deployment", "input_usd_per_mtok", "output_usd_per_mtok", "requests",
                    "prompt_tokens", "completion_tokens", "amount_usd"],
}


def _price(value) -> str:
    return "" if value is None else format(value.normalize(), "f")


def _key_label(line) -> str:
    key = line.api_key
    return f"{key.name} (…{key.last_four})" if key else ""


def report_table_rows(report: BillingReport, tables: dict | None = None) -> dict[str, list[list]]:
    """Every table of the report: {"lines": [[cell, ...], ...], ...}."""
    tables = tables or report_tables(report)
    figures = lambda line: [line.requests, line.prompt_tokens, line.completion_tokens, line.amount_usd]  # noqa: E731
    return {
        "lines": [[line.deployment_name or "(none)", _price(line.input_price_per_mtok),
                   _price(line.output_price_per_mtok), *figures(line)] for line in tables["lines"]],
        "keys": [[_key_label(line), *figures(line)] for line in tables["keys"]],
        "end_users": [[line.end_user or "(none)", *figures(line)] for line in tables["end_users"]],
        "adjustments": [[f"{line.usage_month:%Y-%m}", line.deployment_name or "(none)",
                         _price(line.input_price_per_mtok), _price(line.output_price_per_mtok), *figures(line)]
                        for line in tables["adjustments"]],
    }


def org_reports(org: Organization):
    """The org's reports, newest month first (uniq_billing_report_org_month)."""
    return BillingReport.objects.filter(org=org).order_by("-month")
