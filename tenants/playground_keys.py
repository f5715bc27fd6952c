"""Short-lived API keys for the dashboard's playground.

One per user and organization (`ApiKey.kind == PLAYGROUND`, `created_by` the user),
valid for `OPENCLAW_PLAYGROUND_KEY_SECONDS` (default 600). The page's script fetches
it from `playground/key/` and speaks the real WebSocket protocol with it, so what the
playground shows is exactly what a client gets — and it is billed and limited like
any other request of the org.

The raw secret exists only at creation (keys are stored as digests), so it is kept
in the user's server-side session: a reload, or a second tab, reuses it until it
is about to expire; then a new key replaces it. The key never appears in a page's
HTML. Expired keys are purged by a periodic task (`playground_keys_purge`).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models.deletion import ProtectedError, RestrictedError
from django.utils import timezone

from tenants.audit import record_event
from tenants.keys import generate_key
from tenants.models import ApiKey, AuditEvent, Organization
from tenants.services import api_key_revoke

log = logging.getLogger(__name__)

SESSION_KEY = "playground_keys"
# A key this close to expiring is replaced rather than handed out (a request started
# with it would be refused mid-way).
RENEW_MARGIN = timedelta(seconds=30)
PURGE_AFTER = timedelta(days=1)


def key_lifetime() -> timedelta:
    return timedelta(seconds=settings.PLAYGROUND_KEY_SECONDS)


def playground_key_for(user, org: Organization, *, session) -> tuple[str, datetime]:
    """The user's playground key for `org` and when it expires: the one kept in the
    session if it is still usable for a while, else a new one (any other live
    playground key of the user in the org is revoked: one per user and org)."""
    now = timezone.now()
    kept = session.get(SESSION_KEY, {}).get(str(org.public_id))
    if kept:
        # The row, not the session, says whether the key still works (revoked, shortened).
        expires_at = ApiKey.objects.filter(
            public_id=kept["key"], org=org, kind=ApiKey.Kind.PLAYGROUND, created_by=user, revoked_at__isnull=True,
            expires_at__gt=now + RENEW_MARGIN).values_list("expires_at", flat=True).first()
        if expires_at is not None:
            return kept["raw"], expires_at
    raw, api_key = _issue(user, org, now)
    keys = dict(session.get(SESSION_KEY, {}))
    keys[str(org.public_id)] = {"raw": raw, "key": str(api_key.public_id), "expires_at": api_key.expires_at.isoformat()}
    session[SESSION_KEY] = keys
    return raw, api_key.expires_at


def _issue(user, org: Organization, now: datetime) -> tuple[str, ApiKey]:
    new = generate_key()
    actor = user.get_username()
    with transaction.atomic():
        # Keys about to expire are left to expire (no need to revoke them).
        live = ApiKey.objects.filter(org=org, kind=ApiKey.Kind.PLAYGROUND, created_by=user, revoked_at__isnull=True,
                                     expires_at__gt=now + RENEW_MARGIN)
        for old in live:
            api_key_revoke(api_key=old, actor_type=AuditEvent.ActorType.USER, actor=actor)
        api_key = ApiKey.objects.create(
            org=org, name=f"Playground ({actor})", lookup=new.lookup, digest=new.digest, last_four=new.last_four,
            expires_at=now + key_lifetime(), created_by=user, kind=ApiKey.Kind.PLAYGROUND,
        )
        record_event(
            org=org, actor_type=AuditEvent.ActorType.USER, actor=actor, action="api_key.create",
            target_type="api_key", target_id=str(api_key.public_id),
            data={"name": api_key.name, "key": api_key.display, "kind": ApiKey.Kind.PLAYGROUND,
                  "allowed_models": [], "expires_at": api_key.expires_at.isoformat()},
        )
    return new.raw, api_key


def playground_keys_purge(*, now: datetime | None = None) -> dict[str, int]:
    """Delete playground keys expired for more than a day. A key that requests were
    made with stays (their usage records point at it) and is marked revoked instead.
    Idempotent."""
    now = now or timezone.now()
    deleted = revoked = 0
    stale = ApiKey.objects.filter(kind=ApiKey.Kind.PLAYGROUND, expires_at__lt=now - PURGE_AFTER)
    for api_key in stale.select_related("org").iterator():
        try:
            with transaction.atomic():
                api_key.delete()
            deleted += 1
        except (ProtectedError, RestrictedError):
            if api_key.revoked_at is None:
                ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now)
                revoked += 1
    if deleted or revoked:
        log.info("purged playground keys: %d deleted, %d kept as revoked (they have usage)", deleted, revoked)
    return {"deleted": deleted, "revoked": revoked}
