"""The request log: an org's usage records, filtered, newest first, a page at a time.

Pagination is by keyset on (started_at, request_id), never by offset: the next
page starts strictly after the last row shown, so rows arriving meanwhile neither
repeat nor hide rows, and page 10,000 costs what page 1 costs (one index range
scan; billing/migrations/0006_request_log_indexes.py names the indexes).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone as dt_timezone
from decimal import Decimal
from typing import Any

from django import forms
from django.db.models import Q, QuerySet

from billing.models import UsageRecord
from tenants.models import ApiKey, Organization

PAGE_SIZE = 50
EXPORT_CHUNK = 2000

# The table's columns, in order: the page and the CSV export show the same values
# (the CSV adds the request's and the key's ids first).
COLUMNS = ("started", "key", "model", "deployment", "end_user", "status", "tokens_in", "tokens_out", "cost_usd",
           "first_token_ms", "total_ms")
CSV_HEADER = ("request_id", "key_id", *COLUMNS)


def plain_decimal(value: Decimal | None) -> str:
    """The exact value in positional notation, without trailing zeros ("0.000000123",
    never "1.23E-7"): the same text whichever database returned it."""
    if value is None:
        return ""
    return format(value.normalize(), "f")


def format_time(value: datetime | None) -> str:
    """UTC, to the second, as the page and the CSV show it."""
    if value is None:
        return ""
    return value.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


class RequestFilters(forms.Form):
    """The request log's filters (a GET form: every field optional)."""

    key = forms.ChoiceField(required=False, label="API key")
    model = forms.CharField(required=False, max_length=200, label="Model or route",
                            help_text="the name the client requested")
    deployment = forms.CharField(required=False, max_length=100)
    end_user = forms.CharField(required=False, max_length=200, label="End user")
    status = forms.ChoiceField(required=False, choices=[("", "any")] + list(UsageRecord.Status.choices))
    since = forms.DateField(required=False, label="Since (UTC)", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="Until (UTC)", widget=forms.DateInput(attrs={"type": "date"}),
                            help_text="inclusive")

    def __init__(self, data, *, org: Organization):
        super().__init__(data)
        keys = ApiKey.objects.filter(org=org).order_by("kind", "name").values_list("pk", "public_id", "name",
                                                                                   "lookup", "last_four", "kind")
        choices = [("", "any")]
        self.key_pks: dict[str, int] = {}
        for pk, public_id, name, lookup, last_four, kind in keys:
            self.key_pks[str(public_id)] = pk
            label = f"{name} ({ApiKey(lookup=lookup, last_four=last_four).display})"
            if kind == ApiKey.Kind.PLAYGROUND:
                label += " — playground"
            choices.append((str(public_id), label))
        self.fields["key"].choices = choices

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("key"):
            # The selectors filter on the key's row id: no join with the keys table.
            cleaned["key_pk"] = self.key_pks[cleaned["key"]]
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "must be on or after the start date")
        return cleaned


def parse_cursor(raw: str | None) -> tuple[datetime, uuid.UUID] | None:
    """`<started_at ISO>~<request_id>` of the last row shown; None if absent.

    Raises ValueError for a malformed cursor."""
    if not raw:
        return None
    stamp, _, rid = raw.partition("~")
    started = datetime.fromisoformat(stamp)
    if started.tzinfo is None:
        raise ValueError("cursor time without a timezone")
    return started, uuid.UUID(rid)


def make_cursor(record: UsageRecord) -> str:
    return f"{record.started_at.astimezone(dt_timezone.utc).isoformat()}~{record.request_id}"


def _day_start(day) -> datetime:
    return datetime.combine(day, time.min, tzinfo=dt_timezone.utc)


def usage_records_filtered(*, org: Organization, filters: dict[str, Any]) -> QuerySet[UsageRecord]:
    """The org's records matching cleaned `RequestFilters` data (unordered)."""
    records = UsageRecord.objects.filter(org=org)
    if filters.get("key_pk"):
        records = records.filter(api_key_id=filters["key_pk"])
    elif filters.get("key"):
        records = records.filter(api_key__public_id=filters["key"])
    if filters.get("model"):
        records = records.filter(requested_model=filters["model"])
    if filters.get("deployment"):
        records = records.filter(deployment_name=filters["deployment"])
    if filters.get("end_user"):
        records = records.filter(end_user=filters["end_user"])
    if filters.get("status"):
        records = records.filter(status=filters["status"])
    if filters.get("since"):
        records = records.filter(started_at__gte=_day_start(filters["since"]))
    if filters.get("until"):
        records = records.filter(started_at__lt=_day_start(filters["until"]) + timedelta(days=1))
    return records


def _after(records: QuerySet[UsageRecord], cursor: tuple[datetime, uuid.UUID] | None) -> QuerySet[UsageRecord]:
    if cursor is None:
        return records
    started, rid = cursor
    # `started_at <= t` alone is what lets the index seek straight to the page;
    # the OR settles ties on the same instant.
    return records.filter(started_at__lte=started).filter(Q(started_at__lt=started) | Q(request_id__lt=rid))


def _newest_first(records: QuerySet[UsageRecord]) -> QuerySet[UsageRecord]:
    return records.order_by("-started_at", "-request_id")


@dataclass
class RequestPage:
    records: list[UsageRecord]
    next_cursor: str | None


def request_log_page(*, org: Organization, filters: dict[str, Any], cursor: tuple[datetime, uuid.UUID] | None,
                     size: int = PAGE_SIZE) -> RequestPage:
    """One page of the log, newest first, and the cursor of the next (None on the last page)."""
    records = _after(usage_records_filtered(org=org, filters=filters), cursor)
    rows = list(_newest_first(records).select_related("api_key")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return RequestPage(records=rows, next_cursor=make_cursor(rows[-1]) if more and rows else None)


def request_row(record: UsageRecord) -> dict[str, str]:
    """The values of one row, as both the page and the CSV show them."""
    return {
        "started": format_time(record.started_at),
        "key": record.api_key.display,
        "model": record.requested_model,
        "deployment": record.deployment_name,
        "end_user": record.end_user,
        "status": record.status,
        "tokens_in": str(record.prompt_tokens),
        "tokens_out": str(record.completion_tokens),
        "cost_usd": plain_decimal(record.cost_usd),
        "first_token_ms": "" if record.first_token_ms is None else str(record.first_token_ms),
        "total_ms": "" if record.total_ms is None else str(record.total_ms),
    }


STATUS_PILLS = {
    UsageRecord.Status.COMPLETED: "ok", UsageRecord.Status.LENGTH: "warn", UsageRecord.Status.CANCELLED: "cancelled",
    UsageRecord.Status.CLIENT_GONE: "cancelled", UsageRecord.Status.GATEWAY_LOST: "warn",
}


def status_pill(status: str) -> str:
    """The pill class of a status (dashboard.css): anything not listed is an error."""
    return STATUS_PILLS.get(status, "error")


_EXPORT_FIELDS = ("request_id", "api_key_id", "started_at", "requested_model", "deployment_name", "end_user", "status",
                  "prompt_tokens", "completion_tokens", "cost_usd", "first_token_ms", "total_ms")


def request_log_export_page(*, org: Organization, filters: dict[str, Any], cursor, size: int | None = None):
    """One chunk of the CSV export: (rows in CSV_HEADER order, next cursor or None).

    Reads tuples, not model instances, and the chunk's few keys in one query of their
    own: the export reads every row of the filtered set, and building a model (or
    joining the key) per row would triple its cost."""
    size = size or EXPORT_CHUNK
    records = _newest_first(_after(usage_records_filtered(org=org, filters=filters), cursor))
    fetched = list(records.values_list(*_EXPORT_FIELDS)[:size])
    keys = {pk: (str(public_id), ApiKey(lookup=lookup, last_four=last_four).display)
            for pk, public_id, lookup, last_four in ApiKey.objects.filter(pk__in={row[1] for row in fetched})
            .values_list("pk", "public_id", "lookup", "last_four")} if fetched else {}
    out = []
    for (rid, key_pk, started, model, deployment, end_user, status, tokens_in, tokens_out, cost, first_ms,
         total_ms) in fetched:
        key_id, display = keys[key_pk]
        out.append((str(rid), key_id, format_time(started), display, model, deployment, end_user, status, tokens_in,
                    tokens_out, plain_decimal(cost), "" if first_ms is None else first_ms,
                    "" if total_ms is None else total_ms))
    next_cursor = (fetched[-1][2], fetched[-1][0]) if len(fetched) == size else None
    return out, next_cursor


def usage_record_for_org(*, org: Organization, request_id: uuid.UUID) -> UsageRecord | None:
    return (UsageRecord.objects.select_related("api_key", "via_route", "deployment")
            .filter(org=org, request_id=request_id).first())


@dataclass
class RouteExplanation:
    """`UsageRecord.route` (gateway/routing.py RouteDecision.explain) in readable parts."""

    deployment: str
    provider: str
    strategy: str
    route: str
    rule: str
    reason: str
    attempts: list[dict[str, Any]]
    budget_fallbacks: list[dict[str, Any]]
    extra: dict[str, Any]


_KNOWN_ROUTE_KEYS = {"deployment", "provider", "strategy", "route", "rule", "reason", "attempts", "budget_fallback"}


def explain_route(route: Any) -> RouteExplanation | None:
    """The stored route, tolerant of older or partial shapes; None when nothing was stored."""
    if not isinstance(route, dict) or not route:
        return None

    def text(key):
        value = route.get(key)
        return "" if value is None else str(value)

    def dict_list(key):
        value = route.get(key)
        return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []

    return RouteExplanation(
        deployment=text("deployment"), provider=text("provider"), strategy=text("strategy"), route=text("route"),
        rule=text("rule"), reason=text("reason"), attempts=dict_list("attempts"),
        budget_fallbacks=dict_list("budget_fallback"),
        extra={k: v for k, v in route.items() if k not in _KNOWN_ROUTE_KEYS},
    )


def cost_of_side(tokens: int, price_per_mtok: Decimal | None) -> str:
    """tokens × price per million, exactly (showing the arithmetic; billing is catalog/money.py's)."""
    if price_per_mtok is None:
        return ""
    return plain_decimal(Decimal(tokens) * price_per_mtok / Decimal(1_000_000))
