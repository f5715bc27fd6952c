"""Accepting an invitation: /accounts/invitation/<uidb64>/<token>/ (tenants/urls_accounts.py).

The link (made by tenants.services.membership_invite) carries Django's password-reset
token, so it works once: setting the password changes the hash the token covers. It
stays valid PASSWORD_RESET_TIMEOUT seconds.
"""
from __future__ import annotations

from django.contrib.auth import get_user_model, login
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.tokens import default_token_generator
from django.shortcuts import redirect, render
from django.utils.encoding import force_str
from django.utils.http import urlsafe_base64_decode
from django.views.decorators.cache import never_cache

from tenants.services import invitation_accept


def _invited_user(uidb64: str, token: str):
    try:
        pk = force_str(urlsafe_base64_decode(uidb64))
        user = get_user_model()._default_manager.get(pk=pk)
    except (TypeError, ValueError, OverflowError, get_user_model().DoesNotExist):
        return None
    return user if default_token_generator.check_token(user, token) else None


@never_cache
def accept(request, uidb64, token):
    user = _invited_user(uidb64, token)
    if user is None:
        response = render(request, "tenants/invitation.html", {"invalid": True}, status=400)
    else:
        form = SetPasswordForm(user, request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            invitation_accept(user=user, form=form)
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("home")
        response = render(request, "tenants/invitation.html", {"form": form, "invited": user},
                          status=400 if request.method == "POST" else 200)
    # The URL holds a token: never hand it to another site in a Referer header. (Not
    # "no-referrer": browsers then send "Origin: null" with the form, failing the CSRF check.)
    response["Referrer-Policy"] = "same-origin"
    return response
