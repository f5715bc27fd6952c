"""Dashboard pages of the gateway app, under /orgs/<slug:org>/ (openclaw_site/urls.py)."""
from django.urls import path

from gateway import views

urlpatterns = [
    path("playground/", views.playground, name="playground"),
    path("playground/key/", views.playground_key, name="playground_key"),
]
