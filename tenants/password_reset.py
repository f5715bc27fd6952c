"""Password reset with Django's views: requests for a link are limited, setting the new
password is audited.

Anyone can ask for a reset link for any address, so requests (POSTs of the form) are
limited before any email is sent: at most `PASSWORD_RESET_PER_IP_HOUR` per client address
(`infra/client_address.py`; an IPv6 client counts as its /64, as for the API-key throttle)
and at most `PASSWORD_RESET_PER_EMAIL_HOUR` per email address typed, per hour. The email
count does not look at the accounts, so it applies alike whether or not an account uses
the address, and the answer past a limit (429, `accounts/password_reset_throttled.html`)
says nothing about it either. Requests refused for their client address are not counted
against the email they name.

The counts are django-ratelimit's, in Django's default cache: Redis when `REDIS_URL` is
set, so every process shares them; the embedded default's single process keeps them in
memory. (django-ratelimit is a library here, not an installed app: its system check calls
the in-memory cache unsupported, which holds only for several processes.) An hour is a
fixed window, its edge offset per address by a hash so windows do not all end together:
a limit lets at most twice its number through across a window's edge.

A request for a link is not audited; reaching a limit is, once per window and limit
(`password_reset_throttled`, source `dashboard`), through the burst summaries of failed
logins (tenants/auth_audit.py), so a flood of addresses writes no row per address either.
Setting the new password is audited in the platform chain, in the same transaction as the
new password.
"""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.db import transaction
from django.shortcuts import render
from django_ratelimit.core import get_usage

from infra.client_address import from_request, throttle_subject
from tenants.audit import record_event
from tenants.auth_audit import Failure, record_failure
from tenants.models import AuditEvent

WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class Limit:
    group: str  # django-ratelimit's group: part of the counter's key
    setting: str  # the setting holding requests allowed per window
    reason: str  # in the audit

    def allowed(self) -> int:
        return getattr(settings, self.setting)


PER_CLIENT_ADDRESS = Limit("password-reset:client-address", "PASSWORD_RESET_PER_IP_HOUR",
                           "too many reset requests from one client address")
PER_EMAIL = Limit("password-reset:email", "PASSWORD_RESET_PER_EMAIL_HOUR", "too many reset emails to one address")


@dataclass(frozen=True)
class Refusal:
    limit: Limit
    seconds_left: int


def email_subject(email: str) -> str:
    """What an email's requests are counted against: it compared as Django's reset compares
    it with accounts' addresses (NFKC, case-folded), so case variants share one count."""
    return unicodedata.normalize("NFKC", email.strip()).casefold()


def _count(request, limit: Limit, subject: str) -> Refusal | None:
    """Count this request against `subject`; a Refusal when that goes past the limit."""
    usage = get_usage(request, group=limit.group, key=lambda group, request: subject,
                      rate=(limit.allowed(), WINDOW_SECONDS), increment=True)
    if usage is None or not usage["should_limit"]:
        return None
    if usage["count"] == usage["limit"] + 1:  # the first refusal of this window: audited
        _audit(request, limit, subject)
    return Refusal(limit, usage["time_left"])


def _audit(request, limit: Limit, subject: str) -> None:
    email = subject if limit is PER_EMAIL else ""
    record_failure(Failure(org=None, actor=email, action="password_reset_throttled", reason=limit.reason,
                           source="dashboard", address=from_request(request), name=email, target_type="user"))


def check(request, email: str | None) -> Refusal | None:
    """Count a reset request from this client (and for `email`, if the form gave one)."""
    client = throttle_subject(from_request(request))
    if client is not None and (refused := _count(request, PER_CLIENT_ADDRESS, client)):
        return refused
    if email:
        return _count(request, PER_EMAIL, email_subject(email))
    return None


def refused_page(request, refusal: Refusal):
    seconds = max(1, refusal.seconds_left)
    response = render(request, "accounts/password_reset_throttled.html", {"minutes": math.ceil(seconds / 60)},
                      status=429)
    response["Retry-After"] = str(seconds)
    return response


class PasswordResetView(auth_views.PasswordResetView):
    """Django's view; a request past a limit gets the refusal page and no email."""

    def post(self, request, *args, **kwargs):
        form = self.get_form()
        valid = form.is_valid()
        refusal = check(request, form.cleaned_data["email"] if valid else None)
        if refusal is not None:
            return refused_page(request, refusal)
        return self.form_valid(form) if valid else self.form_invalid(form)


def forget_requests() -> None:
    """Forget every counted reset request (tests; with Redis, an operator unblocking early)."""
    if not settings.REDIS_URL:
        cache.clear()  # this process's memory, where nothing else is kept
        return
    import redis

    prefix = getattr(settings, "RATELIMIT_CACHE_PREFIX", "rl:")
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=re.sub(r"([\\*?\[\]])", r"\\\1", cache.make_key(prefix)) + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)
            user = form.user
            record_event(org=None, actor_type=AuditEvent.ActorType.USER, actor=user.get_username(),
                         action="password.reset", target_type="user", target_id=str(user.pk),
                         data={"address": from_request(self.request) or ""})
        return response
