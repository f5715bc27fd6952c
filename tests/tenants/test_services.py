"""Issuing and revoking API keys (tenants/services.py): only a digest is stored, the key
shown once; each change and its audit event are written together or not at all."""
import pytest

from tenants.access import authenticate_api_key
from tenants.audit import verify_chain
from tenants.models import ApiKey, AuditEvent
from tenants.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


def test_it_stores_only_the_digest_and_shows_the_key_once(org):
    issued = api_key_create(org=org, name="k")
    row = ApiKey.objects.get(pk=issued.api_key.pk)
    stored = " ".join(str(getattr(row, f.attname)) for f in ApiKey._meta.fields)
    assert issued.raw not in stored
    secret = issued.raw[len("ocw_") + 10 + 1:]
    assert len(secret) == 43 and secret not in stored
    assert row.display.endswith(issued.raw[-4:])


def test_create_and_revoke_write_audit_events_in_the_same_transaction(org):
    issued = api_key_create(org=org, name="k")
    api_key_revoke(api_key=issued.api_key)
    api_key_revoke(api_key=issued.api_key)  # idempotent: one event
    actions = list(AuditEvent.objects.filter(org=org).values_list("action", flat=True))
    assert actions == ["org.create", "api_key.create", "api_key.revoke"]
    assert verify_chain(str(org.public_id)) == (True, None)


class AuditWriteFailed(Exception):
    pass


@pytest.fixture
def failing_audit(monkeypatch):
    """Make the audit write fail, as a full disk or a lost connection would."""
    def record_event(**event):
        raise AuditWriteFailed(event["action"])

    monkeypatch.setattr("tenants.services.record_event", record_event)


def test_a_key_whose_audit_event_fails_is_not_created(org, failing_audit):
    keys_before = ApiKey.objects.count()
    with pytest.raises(AuditWriteFailed, match="api_key.create"):
        api_key_create(org=org, name="unaudited")
    assert ApiKey.objects.count() == keys_before
    assert not ApiKey.objects.filter(name="unaudited").exists()


def test_a_revocation_whose_audit_event_fails_leaves_the_key_working(issued_key, failing_audit):
    # (issued_key is set up first, while its own create event can still be written.)
    with pytest.raises(AuditWriteFailed, match="api_key.revoke"):
        api_key_revoke(api_key=issued_key.api_key)
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).revoked_at is None
    assert authenticate_api_key(issued_key.raw).key_prefix == issued_key.api_key.prefix
