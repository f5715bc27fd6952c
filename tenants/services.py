"""Writes to tenant data. Each runs in one transaction with its audit event."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from tenants.audit import record_event
from tenants.hooks import access_revoked
from tenants.keys import generate_key
from tenants.models import ApiKey, AuditEvent, Membership, Organization

Actor = AuditEvent.ActorType


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    raw: str  # the only time the secret exists outside the client


def org_create(*, slug: str, name: str, tier: str = Organization.Tier.FREE, actor: str = "system") -> Organization:
    with transaction.atomic():
        org = Organization.objects.create(slug=slug, name=name, tier=tier)
        record_event(
            org=org, actor_type=Actor.SYSTEM, actor=actor, action="org.create",
            target_type="organization", target_id=str(org.public_id), data={"slug": slug, "tier": tier},
        )
    return org


def org_set_status(*, org: Organization, status: str, actor: str = "system") -> Organization:
    with transaction.atomic():
        org.status = status
        org.save(update_fields=["status"])
        record_event(
            org=org, actor_type=Actor.SYSTEM, actor=actor, action=f"org.{status}",
            target_type="organization", target_id=str(org.public_id),
        )
        close_org_sockets_on_commit(org)
    return org


def close_org_sockets_on_commit(org: Organization) -> None:
    """Once the transaction commits, close the open sockets of a suspended org in every process."""
    if org.status != Organization.Status.ACTIVE:
        public_id = str(org.public_id)
        transaction.on_commit(lambda: access_revoked(
            kind="organization", public_id=public_id, reason="organization suspended"))


def user_membership_set(*, org: Organization, username: str, role: str, email: str = "", password: str | None = None,
                        actor: str = "system") -> Membership:
    """Create the user if needed and give them `role` in `org`."""
    User = get_user_model()
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username, defaults={"email": email})
        if password is not None:
            user.set_password(password)
            user.save(update_fields=["password"])
        membership, _ = Membership.objects.update_or_create(org=org, user=user, defaults={"role": role})
        record_event(
            org=org, actor_type=Actor.SYSTEM, actor=actor, action="membership.set",
            target_type="membership", target_id=str(membership.public_id),
            data={"username": username, "role": role, "user_created": created},
        )
    return membership


def api_key_create(
    *,
    org: Organization,
    name: str,
    allowed_models: list[str] | None = None,
    expires_at: datetime | None = None,
    max_tokens_per_request: int | None = None,
    actor_type: str = Actor.SYSTEM,
    actor: str = "system",
) -> IssuedKey:
    new = generate_key()
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            org=org, name=name, lookup=new.lookup, digest=new.digest, last_four=new.last_four,
            allowed_models=list(allowed_models or []), expires_at=expires_at,
            max_tokens_per_request=max_tokens_per_request,
        )
        record_event(
            org=org, actor_type=actor_type, actor=actor, action="api_key.create",
            target_type="api_key", target_id=str(api_key.public_id),
            data={"name": name, "key": api_key.display, "allowed_models": api_key.allowed_models,
                  "expires_at": expires_at.isoformat() if expires_at else None},
        )
    return IssuedKey(api_key=api_key, raw=new.raw)


def api_key_revoke(*, api_key: ApiKey, actor_type: str = Actor.SYSTEM, actor: str = "system") -> ApiKey:
    with transaction.atomic():
        # Lock the row so two revocations write one event.
        api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if api_key.revoked_at is None:
            api_key.revoked_at = timezone.now()
            api_key.save(update_fields=["revoked_at"])
            record_event(
                org=api_key.org, actor_type=actor_type, actor=actor, action="api_key.revoke",
                target_type="api_key", target_id=str(api_key.public_id), data={"key": api_key.display},
            )
            public_id = str(api_key.public_id)
            transaction.on_commit(lambda: access_revoked(
                kind="api_key", public_id=public_id, reason="API key revoked"))
    return api_key
