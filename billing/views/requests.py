"""The request log: list, detail and CSV export (templates/billing/requests*.html)."""
from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import Http404
from django.shortcuts import render

from billing.request_log import (
    COLUMNS, CSV_HEADER, RequestFilters, cost_of_side, explain_route, parse_cursor, request_log_export_page,
    plain_decimal, request_log_page, request_row, status_pill, usage_record_for_org,
)
from tenants.access import OVERSEERS, org_view
from tenants.audit import record_event
from tenants.log_filters import csv_download, invalid_filters_response, query_without_cursor, read_log_filters
from tenants.models import AuditEvent


def _read_filters(request):
    """(form, cleaned filters or None when invalid, cursor)."""
    form = RequestFilters(request.GET or None, org=request.org)
    filters, cursor = read_log_filters(request, form, parse_cursor)
    return form, filters, cursor


@org_view(get=OVERSEERS)
def request_log(request):
    form, filters, cursor = _read_filters(request)
    page, rows = None, []
    if filters is not None:
        page = request_log_page(org=request.org, filters=filters, cursor=cursor)
        rows = [(record, request_row(record), status_pill(record.status)) for record in page.records]
    return render(request, "billing/requests.html", {
        "section": "requests", "form": form, "page": page, "rows": rows, "columns": COLUMNS,
        "filter_query": query_without_cursor(request), "first_page": cursor is None,
    }, status=200 if filters is not None else 400)


@org_view(get=OVERSEERS)
def request_detail(request, request_id):
    record = usage_record_for_org(org=request.org, request_id=request_id)
    if record is None:
        raise Http404("No such request")
    return render(request, "billing/request_detail.html", {
        "section": "requests", "record": record, "row": request_row(record), "pill": status_pill(record.status), "route": explain_route(record.route),
        "input_cost": cost_of_side(record.prompt_tokens, record.input_price_per_mtok),
        "output_cost": cost_of_side(record.completion_tokens, record.output_price_per_mtok),
        "input_price": plain_decimal(record.input_price_per_mtok),
        "output_price": plain_decimal(record.output_price_per_mtok),
    })


def _audit_export(request, filters: dict) -> None:
    record_event(org=request.org, actor_type=AuditEvent.ActorType.USER, actor=request.user.get_username(),
                 action="export.requests", target_type="request_log",
                 data={"filters": {k: str(filters[k]) for k in RequestFilters.base_fields if filters.get(k)}})


@org_view(get=OVERSEERS)
async def request_log_csv(request):
    """The filtered log as CSV, streamed a chunk at a time (infra/csv_export.py says why)."""
    form, filters, _cursor = await sync_to_async(_read_filters)(request)
    if filters is None:
        return invalid_filters_response(form)
    await sync_to_async(_audit_export)(request, filters)
    org = request.org

    def fetch_page(cursor):
        return request_log_export_page(org=org, filters=filters, cursor=cursor)

    return csv_download(CSV_HEADER, fetch_page, f"{org.slug}-requests.csv")
