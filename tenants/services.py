"""Writes to tenant data. Each runs in one transaction with its audit event."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode

from tenants.audit import record_event
from tenants.hooks import access_revoked
from tenants.keys import generate_key
from tenants.models import ApiKey, AuditEvent, Membership, Organization, validate_time_zone

Actor = AuditEvent.ActorType
Role = Membership.Role


class ChangeRefused(Exception):
    """A change the domain does not allow (e.g. demoting an org's last owner); the
    message is meant for the person who asked, as a form error."""


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


def org_set_time_zone(*, org: Organization, time_zone: str, actor_user=None, actor_type: str = Actor.SYSTEM,
                      actor: str = "system") -> Organization:
    """Set the IANA time zone the org's usage analytics are shown in (audited
    `org.time_zone`); an unknown name raises ValidationError. Billing months stay UTC."""
    validate_time_zone(time_zone)
    actor_type, actor = _actor_of(actor_user, actor_type, actor)
    with transaction.atomic():
        org = Organization.objects.select_for_update().get(pk=org.pk)
        previous = org.time_zone
        if previous == time_zone:
            return org
        org.time_zone = time_zone
        org.save(update_fields=["time_zone"])
        record_event(
            org=org, actor_type=actor_type, actor=actor, action="org.time_zone",
            target_type="organization", target_id=str(org.public_id), data={"from": previous, "to": time_zone},
        )
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


def _actor_of(user, actor_type: str, actor: str) -> tuple[str, str]:
    """A signed-in person acts as themselves; otherwise the given (system) actor."""
    if user is not None:
        return Actor.USER, user.get_username()
    return actor_type, actor


def _key_settings(api_key: ApiKey) -> dict:
    return {
        "name": api_key.name, "key": api_key.display, "allowed_models": api_key.allowed_models,
        "rpm_limit": api_key.rpm_limit, "tpm_limit": api_key.tpm_limit,
        "max_tokens_per_request": api_key.max_tokens_per_request,
        "expires_at": api_key.expires_at.isoformat() if api_key.expires_at else None,
    }


def api_key_create(
    *,
    org: Organization,
    name: str,
    allowed_models: list[str] | None = None,
    expires_at: datetime | None = None,
    max_tokens_per_request: int | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
    created_by=None,
    kind: str = ApiKey.Kind.APPLICATION,
    actor_type: str = Actor.SYSTEM,
    actor: str = "system",
) -> IssuedKey:
    """Issue a key. `allowed_models` are model or route names (empty: every name the org
    can resolve). With `created_by` (a user) the audit event names that user as actor."""
    actor_type, actor = _actor_of(created_by, actor_type, actor)
    new = generate_key()
    with transaction.atomic():
        api_key = ApiKey.objects.create(
            org=org, name=name, lookup=new.lookup, digest=new.digest, last_four=new.last_four,
            allowed_models=list(allowed_models or []), expires_at=expires_at,
            max_tokens_per_request=max_tokens_per_request, rpm_limit=rpm_limit, tpm_limit=tpm_limit,
            created_by=created_by, kind=kind,
        )
        record_event(
            org=org, actor_type=actor_type, actor=actor, action="api_key.create",
            target_type="api_key", target_id=str(api_key.public_id), data=_key_settings(api_key),
        )
    return IssuedKey(api_key=api_key, raw=new.raw)


def api_key_rotate(
    *,
    api_key: ApiKey,
    overlap: timedelta,
    actor_user=None,
    actor_type: str = Actor.SYSTEM,
    actor: str = "system",
) -> IssuedKey:
    """Issue a replacement with the same settings; the old key keeps working for
    `overlap` (or until it expires, if sooner) so clients can switch without downtime.

    Refused (ChangeRefused) for a revoked, expired, already rotated or playground key.
    """
    if overlap < timedelta(0):
        raise ChangeRefused("The overlap cannot be negative.")
    actor_type, actor = _actor_of(actor_user, actor_type, actor)
    new = generate_key()
    with transaction.atomic():
        # Lock the old key so two rotations cannot both issue a replacement.
        old = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        now = timezone.now()
        if old.kind != ApiKey.Kind.APPLICATION:
            raise ChangeRefused("Playground keys cannot be rotated.")
        if old.revoked_at is not None:
            raise ChangeRefused("This key is revoked: a revoked key cannot be rotated. Create a new key instead.")
        if old.expires_at is not None and old.expires_at <= now:
            raise ChangeRefused("This key has expired: an expired key cannot be rotated. Create a new key instead.")
        if ApiKey.objects.filter(rotated_from=old).exists():
            raise ChangeRefused("This key was already rotated: rotate its replacement instead.")
        replacement = ApiKey.objects.create(
            org=old.org, name=old.name, lookup=new.lookup, digest=new.digest, last_four=new.last_four,
            allowed_models=list(old.allowed_models or []), max_tokens_per_request=old.max_tokens_per_request,
            rpm_limit=old.rpm_limit, tpm_limit=old.tpm_limit, created_by=actor_user or old.created_by,
            kind=old.kind, rotated_from=old,
            # The replacement keeps the old key's lifetime, counted from now.
            expires_at=(now + (old.expires_at - old.created_at)) if old.expires_at else None,
        )
        old_expires = now + overlap
        if old.expires_at is not None and old.expires_at < old_expires:
            old_expires = old.expires_at
        old.expires_at = old_expires
        old.save(update_fields=["expires_at"])
        record_event(
            org=old.org, actor_type=actor_type, actor=actor, action="api_key.rotate",
            target_type="api_key", target_id=str(old.public_id),
            data={"key": old.display, "old_key_expires_at": old_expires.isoformat(),
                  "overlap_seconds": int(overlap.total_seconds()),
                  "new_key_id": str(replacement.public_id), "new_key": replacement.display,
                  "new_key_expires_at": replacement.expires_at.isoformat() if replacement.expires_at else None},
        )
    return IssuedKey(api_key=replacement, raw=new.raw)


def api_key_revoke(*, api_key: ApiKey, actor_user=None, actor_type: str = Actor.SYSTEM,
                   actor: str = "system") -> ApiKey:
    actor_type, actor = _actor_of(actor_user, actor_type, actor)
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


# --- Members: invitations, roles, removal ----------------------------------------------
# Who may change whom (enforced here, so every caller gets the same rules):
#   - owners may do anything: invite or make owners, change or remove other owners;
#   - admins manage admins, auditors and members, and may not grant the owner role nor
#     change or remove an owner;
#   - an org always keeps at least one owner: its last owner can be neither demoted nor
#     removed (the owners' rows are locked while counting, so two concurrent demotions
#     of the last two owners cannot both succeed).

def _check_may_manage(*, org: Organization, actor_user, target_role: str | None, new_role: str | None) -> None:
    """Refuse unless the actor (None: the system) may move someone from target_role to new_role."""
    if actor_user is None:
        return
    actor_role = Membership.objects.filter(org=org, user=actor_user).values_list("role", flat=True).first()
    if actor_role not in (Role.OWNER, Role.ADMIN):
        raise ChangeRefused("Only owners and admins can manage members.")
    if actor_role != Role.OWNER and Role.OWNER in (target_role, new_role):
        raise ChangeRefused("Only an owner can grant the owner role or change an owner.")


def _lock_owners_and(org: Organization, membership: Membership) -> Membership:
    """Lock the org's owner rows and `membership`'s (in one order, so no deadlock) and
    return `membership` as it is now."""
    rows = list(Membership.objects.select_for_update().filter(org=org)
                .filter(Q(role=Role.OWNER) | Q(pk=membership.pk)).order_by("pk"))
    current = next((row for row in rows if row.pk == membership.pk), None)
    if current is None:
        raise ChangeRefused("This person is no longer a member.")
    current._owner_count = sum(1 for row in rows if row.role == Role.OWNER)
    return current


def membership_role_set(*, membership: Membership, role: str, actor_user=None, actor_type: str = Actor.SYSTEM,
                        actor: str = "system") -> Membership:
    """Give a member another role; refuses to leave the org without an owner."""
    if role not in Role.values:
        raise ChangeRefused(f"Unknown role {role!r}.")
    org = membership.org
    actor_type, actor = _actor_of(actor_user, actor_type, actor)
    with transaction.atomic():
        current = _lock_owners_and(org, membership)
        _check_may_manage(org=org, actor_user=actor_user, target_role=current.role, new_role=role)
        if current.role == role:
            return current
        if current.role == Role.OWNER and current._owner_count <= 1:
            raise ChangeRefused("This is the organization's last owner: make someone else an owner first.")
        previous = current.role
        current.role = role
        current.save(update_fields=["role"])
        record_event(
            org=org, actor_type=actor_type, actor=actor, action="membership.role_set",
            target_type="membership", target_id=str(current.public_id),
            data={"username": current.user.get_username(), "role": role, "previous_role": previous},
        )
    return current


def membership_remove(*, membership: Membership, actor_user=None, actor_type: str = Actor.SYSTEM,
                      actor: str = "system") -> None:
    """Take a member out of the org (the user account stays); never its last owner."""
    org = membership.org
    actor_type, actor = _actor_of(actor_user, actor_type, actor)
    with transaction.atomic():
        current = _lock_owners_and(org, membership)
        _check_may_manage(org=org, actor_user=actor_user, target_role=current.role, new_role=None)
        if current.role == Role.OWNER and current._owner_count <= 1:
            raise ChangeRefused("This is the organization's last owner: it cannot be removed.")
        username = current.user.get_username()
        public_id = str(current.public_id)
        current.delete()
        record_event(
            org=org, actor_type=actor_type, actor=actor, action="membership.remove",
            target_type="membership", target_id=public_id, data={"username": username, "role": current.role},
        )


def invitation_path(user) -> str:
    """The one-time link (path) where an invited user sets a password."""
    return reverse("invitation", kwargs={"uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
                                         "token": default_token_generator.make_token(user)})


def membership_invite(*, org: Organization, email: str, role: str, invited_by, base_url: str) -> Membership:
    """Add the person with this email to `org` and tell them by email.

    No account with that email (or username): one is made (username = email, no usable
    password) and the email carries a link, valid PASSWORD_RESET_TIMEOUT seconds, to set a
    password. An existing account gets a notice instead. `base_url` (scheme and host)
    makes the links absolute. The email is sent once the transaction commits.
    """
    email = get_user_model().objects.normalize_email(email.strip())
    if role not in Role.values:
        raise ChangeRefused(f"Unknown role {role!r}.")
    User = get_user_model()
    with transaction.atomic():
        _check_may_manage(org=org, actor_user=invited_by, target_role=None, new_role=role)
        user = (User.objects.filter(Q(email__iexact=email) | Q(username__iexact=email)).order_by("pk").first())
        created = user is None
        if created:
            user = User(username=email, email=email)
            user.set_unusable_password()
            user.save()
        elif Membership.objects.filter(org=org, user=user).exists():
            raise ChangeRefused(f"{email} is already a member of this organization.")
        membership = Membership.objects.create(org=org, user=user, role=role)
        record_event(
            org=org, actor_type=Actor.USER, actor=invited_by.get_username(), action="membership.invite",
            target_type="membership", target_id=str(membership.public_id),
            data={"email": email, "role": role, "user_created": created},
        )
        context = {
            "org": org, "role": membership.get_role_display(), "invited_by": invited_by, "user": user,
            "base_url": base_url.rstrip("/"),
            "link": base_url.rstrip("/") + (invitation_path(user) if created else reverse("home")),
            "new_account": created, "valid_days": max(1, settings.PASSWORD_RESET_TIMEOUT // 86400),
        }
        subject = " ".join(render_to_string("tenants/email/invitation_subject.txt", context).split())
        body = render_to_string("tenants/email/invitation.txt", context)
        transaction.on_commit(lambda: send_mail(subject, body, None, [email]))
    return membership


def invitation_accept(*, user, form) -> None:
    """Save the password an invited user chose (a validated SetPasswordForm), audited
    in each org the user belongs to."""
    with transaction.atomic():
        form.save()
        for membership in Membership.objects.filter(user=user).select_related("org"):
            record_event(
                org=membership.org, actor_type=Actor.USER, actor=user.get_username(),
                action="membership.invitation_accept", target_type="membership",
                target_id=str(membership.public_id), data={"username": user.get_username()},
            )
