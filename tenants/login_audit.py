"""Every login, to the dashboard or the admin, in the platform audit chain: successes,
failures, lockouts.

Django's auth signals and django-axes' lockout signal feed the audit. A success
is one event each (`login`). Failures (`login_failed`) and refusals of a
locked-out username at an address (`login_locked_out`) are bursts summarised
like failed API-key authentications (tenants/auth_audit.py), grouped by action
only — never by the username the client typed — so a password spray cannot
write a row per attempt either. Each says where the login was tried:
data.source is "admin" (the Django admin's login page) or "dashboard". Passwords
never reach the audit (Django masks them in the credentials it passes along;
only the username is read).
"""
from __future__ import annotations

from django.db import transaction
from django.urls import reverse

from infra.client_address import from_request
from tenants.audit import record_event
from tenants.auth_audit import Failure, record_failure
from tenants.models import AuditEvent


def _address(request) -> str | None:
    return from_request(request) if request is not None else None


def _username(credentials: dict | None) -> str:
    return str((credentials or {}).get("username") or "")[:150]


def login_source(request) -> str:
    """"admin" for the Django admin's login page, "dashboard" for everything else."""
    path = getattr(request, "path", "") or ""
    return "admin" if path.startswith(reverse("admin:index")) else "dashboard"


def on_logged_in(sender, request, user, **kwargs) -> None:
    with transaction.atomic():
        record_event(org=None, actor_type=AuditEvent.ActorType.USER, actor=user.get_username(),
                     action="login", target_type="user", target_id=str(user.pk),
                     data={"address": _address(request) or "", "source": login_source(request)})


def on_login_failed(sender, credentials, request=None, **kwargs) -> None:
    if request is not None and getattr(request, "axes_locked_out", False):
        return  # a locked-out attempt: audited by on_locked_out
    username = _username(credentials)
    record_failure(Failure(org=None, actor=username, action="login_failed", reason="wrong username or password",
                           source=login_source(request), address=_address(request), name=username,
                           target_type="user"))


def on_locked_out(sender, request=None, username=None, ip_address=None, **kwargs) -> None:
    username = str(username or "")[:150]
    record_failure(Failure(org=None, actor=username, action="login_locked_out", reason="locked out",
                           source=login_source(request), address=_address(request) or ip_address, name=username,
                           target_type="user"))


def connect() -> None:
    from axes.signals import user_locked_out
    from django.contrib.auth.signals import user_logged_in, user_login_failed

    user_logged_in.connect(on_logged_in, dispatch_uid="openclaw-audit-login")
    user_login_failed.connect(on_login_failed, dispatch_uid="openclaw-audit-login-failed")
    user_locked_out.connect(on_locked_out, dispatch_uid="openclaw-audit-locked-out")
