"""Billing report pages: the org's monthly reports, one report with its tables, the
printable invoice, and each table as CSV (templates/billing/reports*.html). Reports are
built by beat (billing/reports.py); these pages only read them."""
from __future__ import annotations

from datetime import timedelta

from asgiref.sync import sync_to_async
from django.http import Http404, HttpResponseBadRequest
from django.shortcuts import render

from billing.models import BillingReport
from billing.reports import (
    REPORT_TABLES, TABLE_HEADERS, finalize_due_at, month_bounds, org_reports, report_table_rows, report_tables,
)
from tenants.access import OVERSEERS, org_view
from tenants.audit import record_event
from tenants.log_filters import csv_download
from tenants.models import AuditEvent


def _report(request, report_id) -> BillingReport:
    try:
        return BillingReport.objects.get(org=request.org, public_id=report_id)
    except BillingReport.DoesNotExist:
        raise Http404("No such report.") from None


def _context(request, report) -> dict:
    tables = report_tables(report)
    _start, end = month_bounds(report.month)
    return {"section": "reports", "report": report, "rows": report_table_rows(report, tables),
            "last_day": (end - timedelta(days=1)).date(), "final_from": finalize_due_at(report.month)}


@org_view(get=OVERSEERS)
def report_list(request):
    return render(request, "billing/reports.html", {"section": "reports", "reports": org_reports(request.org)})


@org_view(get=OVERSEERS)
def report_detail(request, report):
    return render(request, "billing/report_detail.html", _context(request, _report(request, report)))


@org_view(get=OVERSEERS)
def report_invoice(request, report):
    return render(request, "billing/report_invoice.html", _context(request, _report(request, report)))


def _export(request, report_id, table):
    report = _report(request, report_id)
    rows = report_table_rows(report)[table]
    record_event(org=request.org, actor_type=AuditEvent.ActorType.USER, actor=request.user.get_username(),
                 action="export.billing_report", target_type="billing_report", target_id=str(report.public_id),
                 data={"table": table})
    return report, rows


@org_view(get=OVERSEERS)
async def report_csv(request, report):
    """One table of the report as CSV (a report is small: one page)."""
    table = request.GET.get("table", "lines")
    if table not in REPORT_TABLES:
        return HttpResponseBadRequest(f"table must be one of: {', '.join(REPORT_TABLES)}",
                                      content_type="text/plain; charset=utf-8")
    found, rows = await sync_to_async(_export)(request, report, table)

    def fetch_page(cursor):
        return rows, None

    return csv_download(TABLE_HEADERS[table], fetch_page,
                        f"{request.org.slug}-billing-{found.month:%Y-%m}-{table.replace('_', '-')}.csv")
