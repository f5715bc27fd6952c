"""Who may do what: API-key authentication for the gateway and org access for people.

Every path that turns a credential or a URL into tenant data goes through here.
"""
from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from datetime import timedelta

from asgiref.sync import sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed
from django.utils import timezone

from tenants.audit import record_event
from tenants.auth_audit import Failure, record_failure
from tenants.keys import digests_match, display_prefix, parse_key
from tenants.models import ApiKey, AuditEvent, Membership, Organization

log = logging.getLogger(__name__)

# "Last used" is a convenience stamp: writing it on every request would put a
# database write on the hot path, so it is refreshed at most this often.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class KeyPrincipal:
    """What the gateway knows about an authenticated API key."""

    key_id: int
    key_public_id: str
    key_prefix: str
    key_name: str
    org_id: int
    org_public_id: str
    org_slug: str
    org_tier: str
    allowed_models: tuple[str, ...]
    max_tokens_per_request: int | None
    store_prompts: bool
    budget_in_protocol: bool = False
    # Token control (docs/token-control.md); None: no limit.
    org_max_tokens_per_request: int | None = None
    org_max_input_tokens: int | None = None
    key_rpm_limit: int | None = None
    key_tpm_limit: int | None = None
    end_user_rpm_limit: int | None = None
    end_user_tpm_limit: int | None = None

    def may_request(self, name: str) -> bool:
        return not self.allowed_models or name in self.allowed_models


class AuthenticationFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def authenticate_api_key(raw: object, *, source: str = "websocket", address: str | None = None) -> KeyPrincipal:
    """Return the principal for a raw key or raise AuthenticationFailed.

    Every failure is audited (without the key's secret part), a burst of them as
    a summary (tenants/auth_audit.py). `address` is the client's, for the audit.
    """
    parsed = parse_key(raw)
    if parsed is None:
        _record_failure(None, "malformed key", None, source, address)
        raise AuthenticationFailed("malformed key")
    api_key = ApiKey.objects.select_related("org").filter(lookup=parsed.lookup).first()
    if api_key is None or not digests_match(api_key.digest, parsed.digest):
        _record_failure(api_key.org if api_key else None, "unknown key", display_prefix(parsed.lookup), source,
                        address)
        raise AuthenticationFailed("unknown key")
    now = timezone.now()
    reason = _access_problem(revoked_at=api_key.revoked_at, expires_at=api_key.expires_at,
                             org_status=api_key.org.status, now=now)
    if reason:
        _record_failure(api_key.org, reason, api_key.display, source, address)
        raise AuthenticationFailed(reason)
    if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    org = api_key.org
    return KeyPrincipal(
        key_id=api_key.pk,
        key_public_id=str(api_key.public_id),
        key_prefix=api_key.prefix,
        key_name=api_key.name,
        org_id=org.pk,
        org_public_id=str(org.public_id),
        org_slug=org.slug,
        org_tier=org.tier,
        allowed_models=tuple(api_key.allowed_models or ()),
        max_tokens_per_request=api_key.max_tokens_per_request,
        store_prompts=org.store_prompts,
        budget_in_protocol=org.budget_in_protocol,
        org_max_tokens_per_request=org.max_tokens_per_request,
        org_max_input_tokens=org.max_input_tokens,
        key_rpm_limit=api_key.rpm_limit,
        key_tpm_limit=api_key.tpm_limit,
        end_user_rpm_limit=org.end_user_rpm_limit,
        end_user_tpm_limit=org.end_user_tpm_limit,
    )


def _access_problem(*, revoked_at, expires_at, org_status, now) -> str:
    if revoked_at is not None:
        return "key revoked"
    if expires_at is not None and expires_at <= now:
        return "key expired"
    if org_status != Organization.Status.ACTIVE:
        return "organization suspended"
    return ""


def api_key_access_problem(key_id: int) -> str:
    """Why an already authenticated key may no longer be used ("" if it still may)."""
    row = ApiKey.objects.filter(pk=key_id).values("revoked_at", "expires_at", "org__status").first()
    if row is None:
        return "key deleted"
    return _access_problem(revoked_at=row["revoked_at"], expires_at=row["expires_at"],
                           org_status=row["org__status"], now=timezone.now())


def _record_failure(org: Organization | None, reason: str, key_display: str | None, source: str,
                    address: str | None) -> None:
    log.info("authentication failed: %s (%s)", reason, key_display or "no key id")
    record_failure(Failure(org=org, actor=key_display or "", action="auth.failed", reason=reason, source=source,
                           address=address, name=key_display or ""))


def org_for_member(user, org_slug: str) -> tuple[Organization, str]:
    """Return (org, role) for a member; 404 for anyone else, whether or not it exists."""
    membership = (
        Membership.objects.select_related("org").filter(user=user, org__slug=org_slug).first()
        if getattr(user, "is_authenticated", False)
        else None
    )
    if membership is None:
        raise Http404("No such organization")
    return membership.org, membership.role


# --- Dashboard pages: who may see and do what ---------------------------------------
# Roles, widest first. Every dashboard view declares, per HTTP method, which roles may
# call it (`org_view`); the persona matrix test (tests/openclaw_site/test_persona_matrix.py)
# reads these declarations from the URL configuration and checks each one for real.
Role = Membership.Role
EVERYONE = frozenset(Role.values)                                # the overview, the playground
OVERSEERS = frozenset({Role.OWNER, Role.ADMIN, Role.AUDITOR})    # read keys, members, budgets, logs
MANAGERS = frozenset({Role.OWNER, Role.ADMIN})                   # change them


def org_view(*, get: frozenset = frozenset(), post: frozenset = frozenset()):
    """Decorate a dashboard view taking `org` (the slug) as its first URL argument.

    Anonymous: redirect to the login page. Not a member of that org (or no such org):
    404, the same either way. A member whose role may not use this method: 403, and an
    attempt to change something (any method but GET/HEAD) is audited as `access.denied`.
    Otherwise the view runs with `request.org` and `request.role` set. Works for sync
    and async views (an async view resolves the org off the event loop).
    """
    allowed = {"GET": frozenset(get), "HEAD": frozenset(get), "POST": frozenset(post)}

    def decorate(view):
        if inspect.iscoroutinefunction(view):
            @functools.wraps(view)
            async def async_wrapper(request, org, *args, **kwargs):
                refusal = await sync_to_async(_admit)(request, org, allowed)
                if refusal is not None:
                    return refusal
                return await view(request, *args, **kwargs)
            wrapper = async_wrapper
        else:
            @functools.wraps(view)
            def sync_wrapper(request, org, *args, **kwargs):
                refusal = _admit(request, org, allowed)
                if refusal is not None:
                    return refusal
                return view(request, *args, **kwargs)
            wrapper = sync_wrapper
        wrapper.org_access = {method: roles for method, roles in allowed.items() if method != "HEAD"}
        return wrapper

    return decorate


def _admit(request, org_slug: str, allowed: dict[str, frozenset]):
    """None when the request may go on (request.org/role set), else the response refusing it."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    org, role = org_for_member(request.user, org_slug)
    request.org, request.role = org, role
    roles = allowed.get(request.method)
    if not roles:  # no role may use this method here
        return HttpResponseNotAllowed([method for method, who in allowed.items() if who])
    if role not in roles:
        if request.method not in ("GET", "HEAD"):
            record_event(org=org, actor_type=AuditEvent.ActorType.USER, actor=request.user.get_username(),
                         action="access.denied", target_type="page", target_id=request.path[:64],
                         data={"method": request.method, "path": request.path, "role": role})
        raise PermissionDenied(f"the {role} role may not do this")
    return None


def member_orgs(user) -> list[tuple[Organization, str]]:
    """The orgs a user belongs to with their role in each, for the org switcher."""
    if not getattr(user, "is_authenticated", False):
        return []
    return [(m.org, m.role) for m in Membership.objects.select_related("org").filter(user=user).order_by("org__slug")]
