"""What the log pages (request log, audit log) share: reading their filter form and page
cursor from the query string, and the query string their links carry."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.http import HttpResponse, StreamingHttpResponse

from infra.csv_export import stream_csv


def read_log_filters(request, form: forms.Form, parse_cursor: Callable[[str | None], Any]):
    """(cleaned filters, or None when the form or the page link is invalid, cursor).

    With no query string the log's first page is shown unfiltered; an invalid filter or
    page link leaves its error on `form` for the page to show."""
    if request.GET and not form.is_valid():
        return None, None
    try:
        cursor = parse_cursor(request.GET.get("after"))
    except ValueError:
        form.add_error(None, "The page link is not valid; start again from the first page.")
        return None, None
    return (form.cleaned_data if request.GET else {}), cursor


def query_without_cursor(request) -> str:
    """The current filters as a query string, without the page cursor (for CSV and paging links)."""
    query = request.GET.copy()
    query.pop("after", None)
    return query.urlencode()


def invalid_filters_response(form: forms.Form) -> HttpResponse:
    """400 for an export asked for with invalid filters, naming each problem."""
    errors = "; ".join(f"{field}: {' '.join(problems)}" for field, problems in form.errors.items())
    return HttpResponse(f"Invalid filters: {errors}\n", status=400, content_type="text/plain; charset=utf-8")


def csv_download(header, fetch_page, filename: str) -> StreamingHttpResponse:
    """A log's CSV export, streamed page by page (`infra.csv_export.stream_csv` says why)."""
    response = StreamingHttpResponse(stream_csv(header, fetch_page), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    return response
