"""Dashboard pages of the billing app, under /orgs/<slug:org>/ (openclaw_site/urls.py)."""
from django.urls import path

from billing import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("requests/", views.requests, name="requests"),
    path("budgets/", views.budgets, name="budgets"),
]
