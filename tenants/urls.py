"""Dashboard pages of the tenants app, under /orgs/<slug:org>/ (openclaw_site/urls.py)."""
from django.urls import path

from tenants.views import audit, placeholders

urlpatterns = [
    path("keys/", placeholders.keys, name="keys"),
    path("members/", placeholders.members, name="members"),
    path("audit/", audit.audit_log, name="audit_log"),
    path("audit/export.csv", audit.audit_log_csv, name="audit_csv"),
    path("audit/verify/", audit.audit_verify, name="audit_verify"),
    path("audit/<uuid:event>/", audit.audit_event, name="audit_event"),
]
