"""The audit log as an org's overseers browse it: filters and keyset pages.

An org's events are its chain (`chain` = the org's public id), numbered by `seq`;
pages go newest first by seq, each starting below the last seq shown, so a page
is one range scan of the (chain, seq) unique index however long the chain is,
and events written meanwhile never shift a page.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone as dt_timezone
from typing import Any

from django import forms
from django.db.models import QuerySet

from tenants.models import AuditEvent, Organization

PAGE_SIZE = 50
EXPORT_CHUNK = 2000

COLUMNS = ("seq", "time", "actor_type", "actor", "action", "target_type", "target_id")
CSV_HEADER = ("event_id", *COLUMNS, "data")


def org_chain(org: Organization) -> str:
    return str(org.public_id)


class AuditFilters(forms.Form):
    actor = forms.CharField(required=False, max_length=200, help_text="exact, e.g. a username")
    action = forms.CharField(required=False, max_length=64, help_text="or its beginning: key. finds key.create")
    target_type = forms.CharField(required=False, max_length=64, label="Target type")
    target_id = forms.CharField(required=False, max_length=64, label="Target id")
    key = forms.UUIDField(required=False, label="API key id", help_text="events about this key")
    since = forms.DateField(required=False, label="Since (UTC)", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="Until (UTC)", widget=forms.DateInput(attrs={"type": "date"}),
                            help_text="inclusive")

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "must be on or after the start date")
        if cleaned.get("key") and (cleaned.get("target_type") or cleaned.get("target_id")):
            self.add_error("key", "choose a key or a target, not both")
        return cleaned


def parse_cursor(raw: str | None) -> int | None:
    """The last seq shown (None if absent); ValueError if malformed."""
    if not raw:
        return None
    seq = int(raw)
    if seq < 1:
        raise ValueError("seq starts at 1")
    return seq


def _day_start(day) -> datetime:
    return datetime.combine(day, time.min, tzinfo=dt_timezone.utc)


def audit_events_filtered(*, org: Organization, filters: dict[str, Any]) -> QuerySet[AuditEvent]:
    events = AuditEvent.objects.filter(chain=org_chain(org))
    if filters.get("actor"):
        events = events.filter(actor=filters["actor"])
    if filters.get("action"):
        events = events.filter(action__startswith=filters["action"])
    if filters.get("key"):
        events = events.filter(target_type="api_key", target_id=str(filters["key"]))
    if filters.get("target_type"):
        events = events.filter(target_type=filters["target_type"])
    if filters.get("target_id"):
        events = events.filter(target_id=filters["target_id"])
    if filters.get("since"):
        events = events.filter(created_at__gte=_day_start(filters["since"]))
    if filters.get("until"):
        events = events.filter(created_at__lt=_day_start(filters["until"]) + timedelta(days=1))
    return events


@dataclass
class AuditPage:
    events: list[AuditEvent]
    next_cursor: int | None


def audit_log_page(*, org: Organization, filters: dict[str, Any], cursor: int | None,
                   size: int = PAGE_SIZE) -> AuditPage:
    events = audit_events_filtered(org=org, filters=filters)
    if cursor is not None:
        events = events.filter(seq__lt=cursor)
    rows = list(events.order_by("-seq")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return AuditPage(events=rows, next_cursor=rows[-1].seq if more and rows else None)


def format_time(value: datetime) -> str:
    return value.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def audit_row(event: AuditEvent) -> dict[str, str]:
    """One row's values, as the page and the CSV show them."""
    return {
        "seq": str(event.seq),
        "time": format_time(event.created_at),
        "actor_type": event.actor_type,
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
    }


def audit_log_export_page(*, org: Organization, filters: dict[str, Any], cursor: int | None,
                          size: int = EXPORT_CHUNK):
    """One chunk of the CSV export: (rows, next cursor or None)."""
    events = audit_events_filtered(org=org, filters=filters)
    if cursor is not None:
        events = events.filter(seq__lt=cursor)
    rows = list(events.order_by("-seq")[:size])
    out = []
    for event in rows:
        row = audit_row(event)
        out.append([str(event.public_id), *(row[c] for c in COLUMNS),
                    json.dumps(event.data, sort_keys=True, default=str)])
    return out, (rows[-1].seq if len(rows) == size else None)


@dataclass
class EventNeighbours:
    previous: AuditEvent | None
    next: AuditEvent | None


def audit_event_for_org(*, org: Organization, public_id) -> AuditEvent | None:
    return AuditEvent.objects.filter(chain=org_chain(org), public_id=public_id).first()


def audit_event_neighbours(event: AuditEvent) -> EventNeighbours:
    around = {e.seq: e for e in AuditEvent.objects.filter(chain=event.chain, seq__in=(event.seq - 1, event.seq + 1))
              .only("public_id", "seq", "action")}
    return EventNeighbours(previous=around.get(event.seq - 1), next=around.get(event.seq + 1))

