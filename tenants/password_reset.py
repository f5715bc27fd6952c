"""Password reset with Django's views; setting the new password is audited.

The request for a link is not audited (anyone can ask for any address, and the
answer never says whether an account uses it); the change itself is, in the
platform chain, in the same transaction as the new password.
"""
from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.db import transaction

from infra.client_address import from_request
from tenants.audit import record_event
from tenants.models import AuditEvent


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    def form_valid(self, form):
        with transaction.atomic():
            response = super().form_valid(form)
            user = form.user
            record_event(org=None, actor_type=AuditEvent.ActorType.USER, actor=user.get_username(),
                         action="password.reset", target_type="user", target_id=str(user.pk),
                         data={"address": from_request(self.request) or ""})
        return response
