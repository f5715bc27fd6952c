"""The billing report pages (billing/views/reports.py): the list, a report, its invoice
and each table as CSV, whose numbers equal the page's."""
from __future__ import annotations

import re
from datetime import date, timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from billing.models import BillingReport
from billing.reports import report_build, report_finalize
from billing.rollups import usage_rollup_hours
from tenants.models import AuditEvent
from tenants.services import api_key_create
from tests.billing.test_reports import DEC, DEC_START, NOV, NOV_START, record
from tests.support.logs import parse_csv
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def personas(db):
    return make_personas()


def _usage(org):
    keys = [api_key_create(org=org, name=name).api_key for name in ("web", "batch")]
    record(keys[0], NOV_START + timedelta(days=1), cost="1234.005", end_user="alice", prompt=1500, completion=2000)
    record(keys[0], NOV_START + timedelta(days=2), cost="0.004", end_user="bob")
    record(keys[1], NOV_START + timedelta(days=3), cost="2.5", prices=("0.5", "1"), deployment="mock-slow")
    usage_rollup_hours(NOV_START, DEC_START + timedelta(days=5))
    report = report_finalize(report=report_build(org=org, month=NOV), now=DEC_START + timedelta(days=1))
    record(keys[1], NOV_START + timedelta(days=4), cost="3")  # late: an adjustment on December
    record(keys[1], DEC_START + timedelta(days=2), cost="0.75", end_user="carol")
    usage_rollup_hours(NOV_START, DEC_START + timedelta(days=5))
    return report, report_build(org=org, month=DEC)


def _url(name, personas, report=None):
    kwargs = {"org": personas.org.slug}
    if report is not None:
        kwargs["report"] = report.public_id
    return reverse(name, kwargs=kwargs)


class _Tables(HTMLParser):
    """The text of each cell of each <table id="table-...">, row by row."""

    def __init__(self):
        super().__init__()
        self.tables, self.current, self.row, self.cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and (attrs.get("id") or "").startswith("table-"):
            self.current = self.tables.setdefault(attrs["id"][6:], [])
        elif tag == "tr" and self.current is not None:
            self.row = []
        elif tag == "td" and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.current = None
        elif tag == "tr" and self.row:
            self.current.append(self.row)
            self.row = None
        elif tag == "td" and self.cell is not None:
            self.row.append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def _page_tables(html):
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def _plain(cell: str) -> str:
    """A page cell as the CSV writes it: no $, no thousands separators, no dash for none."""
    return "" if cell == "—" else re.sub(r"[$,]", "", cell)


def test_the_list_shows_each_month_with_its_status_and_total(client, personas):
    _usage(personas.org)
    response = personas.client_for(client, "auditor").get(_url("reports", personas))
    html = response.content.decode()
    assert response.status_code == 200
    assert "November 2031" in html and "December 2031" in html
    assert '<span class="pill ok">final</span>' in html and '<span class="pill warn">draft</span>' in html
    assert "$1,236.51" in html  # 1234.01 + 0.00 + 2.50


def test_the_list_reads_a_bounded_number_of_queries(client, personas, django_assert_max_num_queries):
    BillingReport.objects.bulk_create([BillingReport(org=personas.org, month=date(2000 + i // 12, i % 12 + 1, 1))
                                       for i in range(60)])
    personas.client_for(client, "owner")
    with django_assert_max_num_queries(12):
        response = client.get(_url("reports", personas))
    assert response.content.decode().count("pill warn") == 60


def test_the_detail_shows_lines_prices_subtotals_adjustments_and_total(client, personas):
    nov, dec = _usage(personas.org)
    personas.client_for(client, "admin")
    html = client.get(_url("report", personas, nov)).content.decode()
    tables = _page_tables(html)
    assert tables["lines"] == [["mock-fast", "1", "2", "2", "1,510", "2,005", "$1,234.01"],
                               ["mock-slow", "0.5", "1", "1", "10", "5", "$2.50"]]
    assert sorted(row[0].rsplit(" (…", 1)[0] for row in tables["keys"]) == ["batch", "web"]
    assert sorted(row[0] for row in tables["end_users"]) == ["(none)", "alice", "bob"]
    assert "Final since" in html and "adjustments" not in tables
    html = client.get(_url("report", personas, dec)).content.decode()
    tables = _page_tables(html)
    assert tables["adjustments"] == [["2031-11", "mock-fast", "1", "2", "1", "10", "5", "$3.00"]]
    assert "Draft:" in html and "$3.75" in html


def test_the_displayed_lines_add_up_to_the_displayed_total(client, personas):
    nov, _dec = _usage(personas.org)
    personas.client_for(client, "owner")
    html = client.get(_url("report", personas, nov)).content.decode()
    billed = [Decimal(_plain(row[-1])) for row in _page_tables(html)["lines"]]
    total = re.search(r'class="report-total-value">([^<]+)<', html).group(1)
    assert sum(billed) == Decimal(_plain(total)) == nov.total_usd


@pytest.mark.parametrize("table", ["lines", "keys", "end_users", "adjustments"])
def test_each_csv_equals_the_page_table(client, personas, table):
    _nov, dec = _usage(personas.org)
    personas.client_for(client, "auditor")
    page = _page_tables(client.get(_url("report", personas, dec)).content.decode())[table]
    response = client.get(_url("report_csv", personas, dec) + f"?table={table}")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    body = _body(response)
    exported = [list(row.values()) for row in parse_csv(body)]
    assert exported and exported == [[_plain(cell) for cell in row] for row in page]
    event = AuditEvent.objects.get(action="export.billing_report")
    assert event.data == {"table": table} and event.target_id == str(dec.public_id)


def _body(response) -> bytes:
    """A streamed export's bytes (the view is async: its content is an async iterator;
    the report's rows are read before the stream starts, so no other thread reads)."""
    from asgiref.sync import async_to_sync

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)()


def test_an_unknown_csv_table_is_a_400(client, personas):
    report = BillingReport.objects.create(org=personas.org, month=NOV)
    personas.client_for(client, "owner")
    response = client.get(_url("report_csv", personas, report) + "?table=secrets")
    assert response.status_code == 400 and b"table must be one of" in response.content


def test_the_invoice_is_printable_without_inline_styles_or_scripts(client, personas):
    nov, _dec = _usage(personas.org)
    personas.client_for(client, "owner")
    html = client.get(_url("report_invoice", personas, nov)).content.decode()
    assert "Invoice" in html and personas.org.name in html and "$1,236.51" in html
    assert 'href="/static/openclaw/print.css" media="print"' in html
    assert "style=" not in html and "<style" not in html and "<script>" not in html


def test_another_orgs_report_is_a_404(client, personas):
    theirs = BillingReport.objects.create(org=personas.other_org, month=NOV)
    personas.client_for(client, "owner")
    for name in ("report", "report_invoice", "report_csv"):
        assert client.get(_url(name, personas, theirs)).status_code == 404


def test_members_do_not_see_billing(client, personas):
    report = BillingReport.objects.create(org=personas.org, month=DEC)
    personas.client_for(client, "member")
    assert client.get(_url("report", personas, report)).status_code == 403
    assert "Reports</a>" not in client.get(_url("overview", personas)).content.decode()
    personas.client_for(client, "auditor")
    assert "Reports</a>" in client.get(_url("overview", personas)).content.decode()


def test_a_negative_adjustment_reads_the_same_on_the_page_and_in_the_csv(client, personas):
    key = api_key_create(org=personas.org, name="web").api_key
    gone = record(key, NOV_START + timedelta(days=1), cost="1")
    record(key, NOV_START + timedelta(days=2), cost="2")
    usage_rollup_hours(NOV_START, DEC_START)
    report_finalize(report=report_build(org=personas.org, month=NOV), now=DEC_START + timedelta(days=1))
    gone.delete()  # billed, then removed (e.g. refunded by an operator): billed back
    usage_rollup_hours(NOV_START, DEC_START)
    dec = report_build(org=personas.org, month=DEC)
    assert dec.total_usd == Decimal("-1.00")
    personas.client_for(client, "owner")
    page = _page_tables(client.get(_url("report", personas, dec)).content.decode())["adjustments"]
    assert page == [["2031-11", "mock-fast", "1", "2", "-1", "-10", "-5", "-$1.00"]]
    exported = [list(row.values()) for row in parse_csv(_body(client.get(_url("report_csv", personas, dec)
                                                                          + "?table=adjustments")))]
    assert exported == [[_plain(cell) for cell in row] for row in page]


def test_the_detail_reads_a_bounded_number_of_queries(client, personas, django_assert_max_num_queries):
    from billing.models import BillingReportLine

    report = BillingReport.objects.create(org=personas.org, month=NOV)
    keys = [api_key_create(org=personas.org, name=f"key {i}").api_key for i in range(30)]
    BillingReportLine.objects.bulk_create(
        [BillingReportLine(report=report, kind="api_key", api_key=key, requests=1) for key in keys]
        + [BillingReportLine(report=report, kind="deployment", deployment_name=f"d{i}", requests=1) for i in range(40)]
        + [BillingReportLine(report=report, kind="end_user", end_user=f"u{i}", requests=1) for i in range(40)])
    personas.client_for(client, "owner")
    with django_assert_max_num_queries(12):
        response = client.get(_url("report", personas, report))
    assert response.content.decode().count("key 2") >= 1
    with django_assert_max_num_queries(12):
        assert client.get(_url("report_invoice", personas, report)).status_code == 200
