"""Short-lived playground keys (tenants/playground_keys.py) and their purge task."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from tenants.keys import parse_key
from tenants.models import ApiKey, AuditEvent
from tenants.playground_keys import playground_key_for, playground_keys_purge
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def personas(db):
    return make_personas()


def _key_of(raw):
    return ApiKey.objects.get(lookup=parse_key(raw).lookup)


def test_it_issues_a_short_lived_playground_key_and_audits_it(personas, settings):
    settings.PLAYGROUND_KEY_SECONDS = 300
    user = personas.users["member"]
    before = timezone.now()
    raw, expires_at = playground_key_for(user, personas.org, session=SessionStore())
    key = _key_of(raw)
    assert key.kind == ApiKey.Kind.PLAYGROUND and key.created_by == user and key.org == personas.org
    assert key.expires_at == expires_at
    assert before + timedelta(seconds=300) <= expires_at <= timezone.now() + timedelta(seconds=300)
    event = AuditEvent.objects.get(action="api_key.create", target_id=str(key.public_id))
    assert event.data["kind"] == "playground" and event.actor == user.username and raw not in str(event.data)


def test_the_key_is_reused_from_the_session_until_it_nears_expiry(personas):
    user, session = personas.users["member"], SessionStore()
    first = playground_key_for(user, personas.org, session=session)
    assert playground_key_for(user, personas.org, session=session) == first
    assert ApiKey.objects.filter(kind=ApiKey.Kind.PLAYGROUND).count() == 1
    ApiKey.objects.filter(lookup=parse_key(first[0]).lookup).update(expires_at=timezone.now() + timedelta(seconds=10))
    second = playground_key_for(user, personas.org, session=session)
    assert second[0] != first[0]
    assert ApiKey.objects.filter(kind=ApiKey.Kind.PLAYGROUND).count() == 2


def test_there_is_one_live_key_per_user_and_org(personas):
    user = personas.users["member"]
    raw_a, _ = playground_key_for(user, personas.org, session=SessionStore())
    raw_b, _ = playground_key_for(user, personas.org, session=SessionStore())  # another browser: a new key
    assert _key_of(raw_a).revoked_at is not None and _key_of(raw_b).revoked_at is None
    assert AuditEvent.objects.filter(action="api_key.revoke", target_id=str(_key_of(raw_a).public_id)).exists()
    # Other users and other orgs have their own.
    raw_c, _ = playground_key_for(personas.users["admin"], personas.org, session=SessionStore())
    session = SessionStore()
    raw_d, _ = playground_key_for(personas.users["outsider"], personas.other_org, session=session)
    assert _key_of(raw_b).revoked_at is None and _key_of(raw_c).revoked_at is None
    assert _key_of(raw_d).org == personas.other_org


def test_a_revoked_key_in_the_session_is_replaced(personas):
    from tenants.services import api_key_revoke

    user, session = personas.users["member"], SessionStore()
    raw, _ = playground_key_for(user, personas.org, session=session)
    api_key_revoke(api_key=_key_of(raw))
    assert playground_key_for(user, personas.org, session=session)[0] != raw


def test_playground_keys_are_not_application_keys(personas):
    from tenants.services import api_key_create

    api_key_create(org=personas.org, name="app")
    playground_key_for(personas.users["member"], personas.org, session=SessionStore())
    listed = ApiKey.objects.filter(org=personas.org, kind=ApiKey.Kind.APPLICATION)
    assert [k.name for k in listed] == ["app"]


def test_the_purge_deletes_long_expired_keys_and_revokes_those_with_usage(personas):
    from billing.models import UsageRecord
    from tenants.tasks import purge_playground_keys

    keys = {}
    for name in ("fresh", "just expired", "old", "old with usage"):
        raw, _ = playground_key_for(personas.users["member"], personas.org, session=SessionStore())
        keys[name] = _key_of(raw)
    now = timezone.now()
    ApiKey.objects.filter(pk=keys["just expired"].pk).update(expires_at=now - timedelta(hours=23))
    ApiKey.objects.filter(pk__in=[keys["old"].pk, keys["old with usage"].pk]).update(
        expires_at=now - timedelta(days=1, minutes=1))
    UsageRecord.objects.create(org=personas.org, api_key=keys["old with usage"], requested_model="m",
                               status="completed", cost_usd=Decimal("0.01"))
    application = ApiKey.objects.create(org=personas.org, name="app", lookup="applookup1", digest="x" * 64,
                                        last_four="abcd", expires_at=now - timedelta(days=30))

    assert purge_playground_keys.apply().get() == {"deleted": 1, "revoked": 1}
    assert not ApiKey.objects.filter(pk=keys["old"].pk).exists()
    kept = ApiKey.objects.get(pk=keys["old with usage"].pk)
    assert kept.revoked_at is not None
    assert ApiKey.objects.filter(pk__in=[keys["fresh"].pk, keys["just expired"].pk, application.pk]).count() == 3
    # Idempotent.
    assert playground_keys_purge() == {"deleted": 0, "revoked": 0}


def test_the_purge_runs_on_the_beat_schedule(settings):
    entries = [e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values()]
    assert "tenants.tasks.purge_playground_keys" in entries
