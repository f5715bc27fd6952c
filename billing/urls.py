"""Dashboard pages of the billing app, under /orgs/<slug:org>/ (openclaw_site/urls.py)."""
from django.urls import path

from billing.views import overview, placeholders

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("requests/", placeholders.requests, name="requests"),
    path("budgets/", placeholders.budgets, name="budgets"),
]
