"""Dashboard pages of the billing app, under /orgs/<slug:org>/ (openclaw_site/urls.py)."""
from django.urls import path

from billing.views import budgets, overview, placeholders

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("requests/", placeholders.requests, name="requests"),
    path("budgets/", budgets.budgets, name="budgets"),
    path("budgets/new/", budgets.budget_new, name="budget_new"),
    path("budgets/<uuid:budget>/", budgets.budget_detail, name="budget"),
]
