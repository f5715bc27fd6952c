"""Rows for the request log and audit log tests: usage records in bulk, CSV and page parsing."""
from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from html.parser import HTMLParser

BASE_TIME = datetime(2031, 5, 1, 12, 0, tzinfo=dt_timezone.utc)


def make_usage_records(org, api_key, count: int, *, start: datetime = BASE_TIME, step=timedelta(seconds=1),
                       **fields):
    """`count` usage records, one `step` apart going forward from `start` (bulk-inserted)."""
    from billing.models import UsageRecord

    defaults = dict(requested_model="mock-fast", deployment_name="mock-fast", status="completed",
                    prompt_tokens=10, completion_tokens=20, cost_usd=Decimal("0.000225000"),
                    first_token_ms=120, total_ms=900)
    defaults.update(fields)
    records = [UsageRecord(request_id=uuid.uuid4(), org=org, api_key=api_key, started_at=start + i * step,
                           ended_at=start + i * step, **defaults) for i in range(count)]
    UsageRecord.objects.bulk_create(records, batch_size=2000)
    return records


class _TableRows(HTMLParser):
    """Rows of `<table id=...>`: for each `<tr data-<attr>>`, its id and {data-col: text}."""

    def __init__(self, table_id: str, row_attr: str):
        super().__init__()
        self.table_id, self.row_attr = table_id, row_attr
        self.in_table = False
        self.rows: list[tuple[str, dict[str, str]]] = []
        self.col: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == self.table_id:
            self.in_table = True
        elif self.in_table and tag == "tr" and self.row_attr in attrs:
            self.rows.append((attrs[self.row_attr], {}))
        elif self.in_table and self.rows and "data-col" in attrs:
            self.col, self.text = attrs["data-col"], []

    def handle_endtag(self, tag):
        if tag == "table":
            self.in_table = False
        elif self.col is not None and tag in ("td", "a", "span", "code"):
            self.rows[-1][1][self.col] = "".join(self.text).strip()
            self.col = None

    def handle_data(self, data):
        if self.col is not None:
            self.text.append(data)


def table_rows(html: str, table_id: str, row_attr: str) -> list[tuple[str, dict[str, str]]]:
    parser = _TableRows(table_id, row_attr)
    parser.feed(html)
    return parser.rows


def next_link(html: str) -> str | None:
    match = re.search(r'<a rel="next" href="([^"]+)"', html)
    return match.group(1).replace("&amp;", "&") if match else None


def export_link(html: str) -> str:
    match = re.search(r'<a id="export-csv"[^>]*href="([^"]+)"', html)
    assert match, "no export link"
    return match.group(1).replace("&amp;", "&")


def parse_csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))
