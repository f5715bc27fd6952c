from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from openclaw_site import probes, views

admin.site.site_header = "OpenClaw Gateway administration"
admin.site.site_title = "OpenClaw Gateway"

# Every page inside an organization is under /orgs/<slug>/ and its view is wrapped in
# tenants.access.org_view, which turns the slug into request.org for members only.
org_pages = [
    path("", include("billing.urls")),
    path("", include("tenants.urls")),
    path("", include("gateway.urls")),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("accounts/", include("tenants.urls_accounts")),
    path("orgs/<slug:org>/", include(org_pages)),
    path("admin/", admin.site.urls),
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    # Browsers ask for /favicon.ico on pages without an icon link (Django admin's).
    path("favicon.ico", RedirectView.as_view(url=static("openclaw/favicon.svg"), permanent=True)),
]
