"""Dashboard pages of the tenants app, under /orgs/<slug:org>/ (openclaw_site/urls.py)."""
from django.urls import path

from tenants.views import audit, keys, members

urlpatterns = [
    path("keys/", keys.key_list, name="keys"),
    path("keys/new/", keys.key_new, name="key_new"),
    path("keys/<uuid:key>/", keys.key_detail, name="key_detail"),
    path("keys/<uuid:key>/revoke/", keys.key_revoke, name="key_revoke"),
    path("keys/<uuid:key>/rotate/", keys.key_rotate, name="key_rotate"),
    path("members/", members.member_list, name="members"),
    path("members/invite/", members.member_invite, name="member_invite"),
    path("members/<uuid:member>/", members.member_detail, name="member_detail"),
    path("members/<uuid:member>/remove/", members.member_remove, name="member_remove"),
    path("audit/", audit.audit_log, name="audit_log"),
    path("audit/export.csv", audit.audit_log_csv, name="audit_csv"),
    path("audit/verify/", audit.audit_verify, name="audit_verify"),
    path("audit/<uuid:event>/", audit.audit_event, name="audit_event"),
]
