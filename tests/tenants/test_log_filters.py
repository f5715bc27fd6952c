"""What the log pages share: their filter form and page cursor read from the query
string, the links' query string, and the export answers."""
import pytest
from django import forms
from django.test import RequestFactory

from tenants.log_filters import csv_download, invalid_filters_response, query_without_cursor, read_log_filters


class Filters(forms.Form):
    actor = forms.CharField(required=False, max_length=5)


def parse(raw):
    if raw is not None and not raw.isdigit():
        raise ValueError(raw)
    return int(raw) if raw else None


def read(query):
    request = RequestFactory().get("/log/", query)
    form = Filters(request.GET or None)
    return form, *read_log_filters(request, form, parse)


def test_no_query_string_is_the_unfiltered_first_page():
    form, filters, cursor = read({})
    assert filters == {} and cursor is None


def test_valid_filters_and_cursor_are_returned():
    _, filters, cursor = read({"actor": "olga", "after": "42"})
    assert filters == {"actor": "olga"} and cursor == 42


@pytest.mark.parametrize("query", [{"actor": "far too long"}, {"after": "not-a-cursor"}])
def test_an_invalid_filter_or_page_link_is_an_error_on_the_form(query):
    form, filters, cursor = read(query)
    assert filters is None and cursor is None and form.errors


def test_links_keep_the_filters_and_drop_the_cursor():
    request = RequestFactory().get("/log/", {"actor": "olga", "after": "42"})
    assert query_without_cursor(request) == "actor=olga"


def test_an_export_with_invalid_filters_is_a_400_naming_the_field():
    form, _, _ = read({"actor": "far too long"})
    response = invalid_filters_response(form)
    assert response.status_code == 400 and b"actor:" in response.content


def test_an_export_is_a_streamed_attachment_never_cached():
    response = csv_download(["a"], lambda cursor: ([], None), "acme-log.csv")
    assert response.streaming and response["Content-Disposition"] == 'attachment; filename="acme-log.csv"'
    assert response["Cache-Control"] == "no-store"
