from django.contrib import admin
from django.urls import path

from gateway import views as gateway_views

admin.site.site_header = "OpenClaw Gateway administration"
admin.site.site_title = "OpenClaw Gateway"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", gateway_views.healthz, name="healthz"),
    path("readyz", gateway_views.readyz, name="readyz"),
]
