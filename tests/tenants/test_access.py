"""Authenticating an API key (tenants/access.py): a valid key gives its principal; a
revoked, expired, suspended or forged one is refused, and the failure audited without
the secret."""
from datetime import timedelta

import pytest
from django.utils import timezone

from tenants.access import AuthenticationFailed, authenticate_api_key
from tenants.models import ApiKey, AuditEvent
from tenants.services import api_key_revoke, org_set_status

pytestmark = pytest.mark.django_db


def test_it_authenticates_a_valid_key(issued_key, org):
    principal = authenticate_api_key(issued_key.raw)
    assert principal.org_slug == org.slug
    assert principal.key_prefix == issued_key.api_key.prefix
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).last_used_at is not None


@pytest.mark.parametrize("mutate,reason", [
    (lambda key: api_key_revoke(api_key=key), "key revoked"),
    (lambda key: ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1)),
     "key expired"),
    (lambda key: org_set_status(org=key.org, status="suspended"), "organization suspended"),
])
def test_it_rejects_revoked_expired_and_suspended_keys(issued_key, mutate, reason):
    mutate(issued_key.api_key)
    with pytest.raises(AuthenticationFailed) as caught:
        authenticate_api_key(issued_key.raw)
    assert caught.value.reason == reason


def test_it_rejects_a_key_with_the_right_lookup_but_wrong_secret(issued_key):
    forged = issued_key.raw[:-4] + ("AAAA" if not issued_key.raw.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthenticationFailed):
        authenticate_api_key(forged)


def test_failed_authentication_is_audited_without_the_secret(issued_key, org):
    with pytest.raises(AuthenticationFailed):
        authenticate_api_key(issued_key.raw[:-4] + "zzzz")
    event = AuditEvent.objects.filter(action="auth.failed").last()
    assert event.org == org
    assert event.data["reason"] == "unknown key"
    assert issued_key.raw[:-4] not in str(event.data) + event.actor
    with pytest.raises(AuthenticationFailed):
        authenticate_api_key("garbage")
    assert AuditEvent.objects.filter(action="auth.failed", org__isnull=True).count() == 1
