"""Signing in and out, password reset and accepting invitations, under /accounts/."""
from django.conf import settings
from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from tenants.password_reset import PasswordResetConfirmView, PasswordResetView

from tenants.views import invitations

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(template_name="accounts/login.html",
                                                redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("invitation/<uidb64>/<token>/", invitations.accept, name="invitation"),
]

# Password reset: Django's views, our templates. The link is valid PASSWORD_RESET_TIMEOUT;
# requests for it are limited per email and per client address (tenants/password_reset.py).
urlpatterns += [
    path("password-reset/", PasswordResetView.as_view(
        template_name="accounts/password_reset_form.html",
        email_template_name="accounts/password_reset_email.txt",
        subject_template_name="accounts/password_reset_subject.txt",
        success_url=reverse_lazy("password_reset_done")), name="password_reset"),
]
urlpatterns += [
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(
        template_name="accounts/password_reset_done.html",
        extra_context={"reset_hours": max(1, settings.PASSWORD_RESET_TIMEOUT // 3600)}), name="password_reset_done"),
]
urlpatterns += [
    path("reset/<uidb64>/<token>/", PasswordResetConfirmView.as_view(
        template_name="accounts/password_reset_confirm.html",
        success_url=reverse_lazy("password_reset_complete")), name="password_reset_confirm"),
]
urlpatterns += [
    path("reset/done/", auth_views.PasswordResetCompleteView.as_view(
        template_name="accounts/password_reset_complete.html"), name="password_reset_complete"),
]
