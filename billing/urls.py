"""Dashboard pages of the billing app, under /orgs/<slug:org>/ (openclaw_site/urls.py)."""
from django.urls import path

from billing.views import budgets, overview, reports, requests, usage

urlpatterns = [
    path("", overview.overview, name="overview"),
    path("usage/", usage.usage, name="usage"),
    path("usage/export.csv", usage.usage_csv, name="usage_csv"),
    path("requests/", requests.request_log, name="requests"),
    path("requests/export.csv", requests.request_log_csv, name="requests_csv"),
    path("requests/<uuid:request_id>/", requests.request_detail, name="request_detail"),
    path("budgets/", budgets.budgets, name="budgets"),
    path("budgets/new/", budgets.budget_new, name="budget_new"),
    path("budgets/<uuid:budget>/", budgets.budget_detail, name="budget"),
    path("reports/", reports.report_list, name="reports"),
    path("reports/<uuid:report>/", reports.report_detail, name="report"),
    path("reports/<uuid:report>/invoice/", reports.report_invoice, name="report_invoice"),
    path("reports/<uuid:report>/export.csv", reports.report_csv, name="report_csv"),
]
