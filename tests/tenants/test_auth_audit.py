"""A burst of failed authentications is audited as its first event plus one summary per
window, never one hash-chained row per attempt — for an org's key and for the platform."""
import time

import pytest

from tenants.access import AuthenticationFailed, authenticate_api_key
from tenants.audit import verify_chain
from tenants.auth_audit import failure_audit
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db

WINDOW = 60


def fail(raw: str, address: str = "198.51.100.7") -> None:
    with pytest.raises(AuthenticationFailed):
        authenticate_api_key(raw, address=address)


def after_the_window() -> float:
    return time.monotonic() + WINDOW + 1


def test_a_burst_on_one_key_writes_one_event_then_one_summary(issued_key, org):
    chain = str(org.public_id)
    before = AuditEvent.objects.filter(chain=chain).count()
    for n in range(300):
        fail(issued_key.raw[:-6] + f"{n:06d}", address=f"198.51.100.{n % 12}")
    events = list(AuditEvent.objects.filter(chain=chain, action__startswith="auth.failed"))
    assert [(e.action, e.actor, e.data["reason"], e.data["address"]) for e in events] == [
        ("auth.failed", issued_key.api_key.prefix, "unknown key", "198.51.100.0")]
    assert failure_audit.write_all() == 1
    summary = AuditEvent.objects.get(chain=chain, action="auth.failed.summary")
    assert summary.actor == issued_key.api_key.prefix and summary.data["failures"] == 299
    assert len(summary.data["addresses"]) == 10 and summary.data["more_addresses"] == 2
    assert summary.data["message"].startswith("299 failed authentications (unknown key) from 198.51.100.1, ")
    assert issued_key.raw[:-6] not in str(summary.data)  # never the secret part
    assert AuditEvent.objects.filter(chain=chain).count() == before + 2
    assert verify_chain(chain) == (True, None)


def test_failures_without_an_org_never_write_a_row_per_attempt(db):
    # Random lookups that match no key, and malformed keys: platform chain, grouped by reason only.
    for n in range(200):
        fail(f"ocw_{n:010d}_" + "A" * 43)
        fail(f"garbage-{n}")
    rows = AuditEvent.objects.filter(chain="platform", action__startswith="auth.failed")
    assert sorted(rows.values_list("data__reason", flat=True)) == ["malformed key", "unknown key"]
    assert failure_audit.write_all() == 2
    summaries = {e.data["reason"]: e for e in AuditEvent.objects.filter(action="auth.failed.summary")}
    assert summaries["unknown key"].data["failures"] == 199 and summaries["malformed key"].data["failures"] == 199
    assert summaries["unknown key"].actor == "" and len(summaries["unknown key"].data["names"]) == 10
    assert verify_chain("platform") == (True, None)


def test_a_sustained_burst_writes_one_summary_per_window_and_a_quiet_window_ends_it(issued_key, org):
    chain = str(org.public_id)
    wrong = issued_key.raw[:-4] + "zzzz"
    fail(wrong)
    fail(wrong)
    assert failure_audit.write_due() == 0  # the window is still open
    assert len(failure_audit.due(now=after_the_window())) == 1  # its summary, once the window has ended
    fail(wrong)  # still failing: counted in the next window
    assert len(writes := failure_audit.due(now=after_the_window() + WINDOW)) == 1
    assert writes[0].data["failures"] == 1
    assert failure_audit.due(now=after_the_window() + 3 * WINDOW) == []  # a quiet window ended the burst
    assert not failure_audit.pending()
    fail(wrong)  # a new burst: its first failure is written at once again
    assert AuditEvent.objects.filter(chain=chain, action="auth.failed").count() == 2


def test_the_next_failure_writes_a_summary_that_is_due(issued_key, org, monkeypatch):
    wrong = issued_key.raw[:-4] + "zzzz"
    fail(wrong)
    fail(wrong)
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + WINDOW + 1)
    fail(wrong)
    assert AuditEvent.objects.get(chain=str(org.public_id), action="auth.failed.summary").data["failures"] == 1
