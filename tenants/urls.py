"""Dashboard pages of the tenants app, under /orgs/<slug:org>/ (openclaw_site/urls.py)."""
from django.urls import path

from tenants import views

urlpatterns = [
    path("keys/", views.keys, name="keys"),
    path("members/", views.members, name="members"),
    path("audit/", views.audit_log, name="audit_log"),
]
