from django.contrib import admin
from django.urls import path

from openclaw_site import probes

admin.site.site_header = "OpenClaw Gateway administration"
admin.site.site_title = "OpenClaw Gateway"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
]
