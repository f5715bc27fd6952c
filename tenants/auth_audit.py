"""Failed logins in the audit chain: one event for the first of a burst, then summaries.

A failed authentication is worth auditing, but one hash-chained row per attempt
lets anyone who knows a key's public lookup prefix grow that org's chain as
fast as they can send frames. So failures are grouped into bursts per chain,
actor, action and reason:

- the first failure of a burst writes its event at once (`auth.failed`), with
  the reason, source and address, as before;
- later ones are only counted; when the burst's window
  (`GATEWAY["AUTH_AUDIT_SUMMARY_SECONDS"]`) ends, one summary event
  (`auth.failed.summary`) says how many there were, from which addresses
  (the first 10, plus how many more) and sources, between which times;
- while failures keep coming, each following window writes one more summary;
  a window with none ends the burst, so the next failure writes an event at
  once again.

Failures with no org (malformed keys, unknown lookups) go to the platform chain
grouped by reason only — never by the lookup the client made up — so random
prefixes cannot create a burst (and a row) per attempt either. Attempts refused
by the throttle (`gateway/auth_throttle.py`) are counted, never written
individually: they cost no database work at all.

Password-reset requests past their limits (`password_reset_throttled`,
tenants/password_reset.py) are summarised the same way.

Each process keeps its own bursts, so N gateway processes write at most N
events per burst window. A summary is written by the gateway's background
flusher within a second of its window's end, by the next failure recorded
after it, and on shutdown (`write_all`).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.db import transaction

from tenants.audit import record_event
from tenants.models import AuditEvent

log = logging.getLogger(__name__)

LISTED_ADDRESSES = 10
# Distinct addresses counted per burst; past this the summary says "at least".
COUNTED_ADDRESSES = 1000
LISTED_NAMES = 10


def window_seconds() -> float:
    return float(settings.GATEWAY["AUTH_AUDIT_SUMMARY_SECONDS"])


@dataclass(frozen=True)
class Failure:
    org: object | None  # Organization (None: the platform chain)
    actor: str  # the key's display prefix, a username, or "" when nothing trustworthy is known
    action: str  # e.g. "auth.failed", "login_failed"
    reason: str
    source: str
    address: str | None = None
    name: str = ""  # listed in summaries of org-less bursts: the lookup or username tried
    actor_type: str = AuditEvent.ActorType.ANONYMOUS
    target_type: str = "api_key"


@dataclass
class _Burst:
    first: Failure
    window_end: float
    started_at: datetime
    count: int = 0
    addresses: dict[str, None] = field(default_factory=dict)
    sources: dict[str, None] = field(default_factory=dict)
    names: dict[str, None] = field(default_factory=dict)
    first_at: datetime | None = None
    last_at: datetime | None = None

    def add(self, failure: Failure) -> None:
        now = _utcnow()
        self.count += 1
        self.first_at = self.first_at or now
        self.last_at = now
        if failure.address and len(self.addresses) < COUNTED_ADDRESSES:
            self.addresses[failure.address] = None
        self.sources[failure.source] = None
        if failure.name and len(self.names) < LISTED_NAMES:
            self.names[failure.name] = None


@dataclass(frozen=True)
class _Write:
    failure: Failure
    data: dict
    action: str


def _utcnow() -> datetime:
    return datetime.now(dt_timezone.utc)


def _what(action: str) -> str:
    """What a summary counts, by its burst's action."""
    if action.startswith("auth."):
        return "failed authentication"
    if action == "password_reset_throttled":
        return "password-reset limit hit"
    return "failed login"


def _key(failure: Failure) -> tuple:
    org_id = getattr(failure.org, "pk", None)
    # Org-less bursts are never split by the actor: it is whatever the client sent.
    actor = failure.actor if org_id is not None else ""
    return org_id, actor, failure.action, failure.reason


class FailureAudit:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bursts: dict[tuple, _Burst] = {}

    def note(self, failure: Failure, *, now: float | None = None, immediate: bool = True) -> list[_Write]:
        """Count a failure; return what must be written now (its event when it opens a
        burst and `immediate`, plus any summaries already due). No database work."""
        now = time.monotonic() if now is None else now
        with self._lock:
            writes = self._take_due(now)
            key = _key(failure)
            burst = self._bursts.get(key)
            if burst is None:
                burst = self._bursts[key] = _Burst(first=failure, window_end=now + window_seconds(),
                                                   started_at=_utcnow())
                if immediate:
                    data = {"reason": failure.reason, "source": failure.source}
                    if failure.address:
                        data["address"] = failure.address
                    writes.append(_Write(failure, data, failure.action))
                    return writes
            burst.add(failure)
        return writes

    def due(self, *, now: float | None = None) -> list[_Write]:
        with self._lock:
            return self._take_due(time.monotonic() if now is None else now)

    def pending(self) -> bool:
        return bool(self._bursts)

    def _take_due(self, now: float, everything: bool = False) -> list[_Write]:
        writes = []
        for key, burst in list(self._bursts.items()):
            if burst.window_end > now and not everything:
                continue
            if burst.count:
                writes.append(self._summary(burst))
            if burst.count and not everything:
                # Failures are still coming: keep summarising, window by window.
                self._bursts[key] = _Burst(first=burst.first, window_end=now + window_seconds(),
                                           started_at=_utcnow())
            else:
                del self._bursts[key]
        return writes

    @staticmethod
    def _summary(burst: _Burst) -> _Write:
        listed = list(burst.addresses)[:LISTED_ADDRESSES]
        more = len(burst.addresses) - len(listed)
        seconds = max(1, round((burst.last_at - burst.started_at).total_seconds()))
        what = _what(burst.first.action)
        from_where = ", ".join(listed) or "unknown addresses"
        if more:
            at_least = "at least " if len(burst.addresses) >= COUNTED_ADDRESSES else ""
            from_where += f" and {at_least}{more} more"
        plural = "s" if burst.count != 1 else ""
        message = f"{burst.count} {what}{plural} ({burst.first.reason}) from {from_where} in the last {seconds} s"
        data = {
            "reason": burst.first.reason,
            "failures": burst.count,
            "addresses": listed,
            "more_addresses": more,
            "sources": list(burst.sources),
            "first_at": burst.first_at.isoformat(),
            "last_at": burst.last_at.isoformat(),
            "message": message,
        }
        if burst.names:
            data["names"] = list(burst.names)
        return _Write(burst.first, data, f"{burst.first.action}.summary")

    def write_due(self) -> int:
        return write(self.due())

    def write_all(self) -> int:
        """Every summary still open, whatever its window (shutdown, tests)."""
        with self._lock:
            writes = self._take_due(time.monotonic(), everything=True)
        return write(writes)

    def clear(self) -> None:
        with self._lock:
            self._bursts.clear()


def write(writes: list[_Write]) -> int:
    """Append the events (each in its own transaction). Returns how many were written."""
    for item in writes:
        failure = item.failure
        # The first event names its actor; a summary of an org-less burst does not
        # (the actor is whatever the first client sent) and lists names instead.
        actor = failure.actor if (item.action == failure.action or failure.org is not None) else ""
        with transaction.atomic():
            record_event(org=failure.org, actor_type=failure.actor_type, actor=actor, action=item.action,
                         target_type=failure.target_type, target_id="", data=item.data)
    return len(writes)


failure_audit = FailureAudit()


def record_failure(failure: Failure) -> None:
    """Count a failure and write what is due (call from synchronous code that may use the database)."""
    write(failure_audit.note(failure))
