"""The audit log: list, event detail, CSV export and chain verification
(templates/tenants/audit*.html)."""
from __future__ import annotations

import json

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render

from tenants.access import OVERSEERS, org_view
from tenants.audit import audit_verification_start, record_event
from tenants.audit_log import (
    COLUMNS, CSV_HEADER, AuditFilters, audit_event_for_org, audit_event_neighbours, audit_log_export_page,
    audit_log_page, audit_row, org_chain, parse_cursor,
)
from tenants.log_filters import csv_download, invalid_filters_response, query_without_cursor, read_log_filters
from tenants.models import AuditEvent, AuditVerification

RECENT_VERIFICATIONS = 10


def _read_filters(request):
    """(form, cleaned filters or None when invalid, cursor)."""
    form = AuditFilters(request.GET or None)
    filters, cursor = read_log_filters(request, form, parse_cursor)
    return form, filters, cursor


@org_view(get=OVERSEERS)
def audit_log(request):
    form, filters, cursor = _read_filters(request)
    page, rows = None, []
    if filters is not None:
        page = audit_log_page(org=request.org, filters=filters, cursor=cursor)
        rows = [(event, audit_row(event)) for event in page.events]
    return render(request, "tenants/audit.html", {
        "section": "audit", "form": form, "page": page, "rows": rows, "columns": COLUMNS,
        "filter_query": query_without_cursor(request), "first_page": cursor is None,
    }, status=200 if filters is not None else 400)


@org_view(get=OVERSEERS)
def audit_event(request, event):
    found = audit_event_for_org(org=request.org, public_id=event)
    if found is None:
        raise Http404("No such event")
    return render(request, "tenants/audit_event.html", {
        "section": "audit", "event": found, "row": audit_row(found), "neighbours": audit_event_neighbours(found),
        "data_json": json.dumps(found.data, indent=2, sort_keys=True, default=str),
    })


def _audit_export(request, filters: dict) -> None:
    record_event(org=request.org, actor_type=AuditEvent.ActorType.USER, actor=request.user.get_username(),
                 action="export.audit", target_type="audit_log",
                 data={"filters": {k: str(v) for k, v in filters.items() if v not in (None, "")}})


@org_view(get=OVERSEERS)
async def audit_log_csv(request):
    """The filtered audit log as CSV, streamed a chunk at a time (infra/csv_export.py says why)."""
    form, filters, _cursor = await sync_to_async(_read_filters)(request)
    if filters is None:
        return invalid_filters_response(form)
    # The export's own event is written first, so it is in the export.
    await sync_to_async(_audit_export)(request, filters)
    org = request.org

    def fetch_page(cursor):
        return audit_log_export_page(org=org, filters=filters, cursor=cursor)

    return csv_download(CSV_HEADER, fetch_page, f"{org.slug}-audit.csv")


@org_view(get=OVERSEERS, post=OVERSEERS)
def audit_verify(request):
    """The org's latest chain checks; POST starts one (auditors may: it changes nothing)."""
    if request.method == "POST":
        audit_verification_start(org=request.org, user=request.user, actor=request.user.get_username())
        messages.success(request, "Verification started: this page shows its progress.")
        return redirect("audit_verify", org=request.org.slug)
    verifications = list(AuditVerification.objects.filter(org=request.org).select_related("started_by")
                         .order_by("-started_at")[:RECENT_VERIFICATIONS])
    broken_seqs = {v.first_broken_seq for v in verifications if v.first_broken_seq}
    events_at = dict(AuditEvent.objects.filter(chain=org_chain(request.org), seq__in=broken_seqs)
                     .values_list("seq", "public_id")) if broken_seqs else {}
    rows = [(v, events_at.get(v.first_broken_seq)) for v in verifications]
    return render(request, "tenants/audit_verify.html", {
        "section": "audit", "rows": rows, "latest": verifications[0] if verifications else None,
        "running": any(v.is_running for v in verifications),
    })
