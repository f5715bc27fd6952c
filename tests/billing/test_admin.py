"""Billing reports in Django admin (billing/admin.py): every org's, read-only."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from billing.models import BillingReport, BillingReportLine

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "correct-horse-battery")
    client.force_login(user)
    return client


def test_operators_see_every_orgs_reports_and_cannot_change_them(operator_client, org, other_org):
    mine = BillingReport.objects.create(org=org, month=date(2031, 11, 1), total_usd=Decimal("12.34"))
    BillingReport.objects.create(org=other_org, month=date(2031, 11, 1), total_usd=Decimal("56.78"))
    BillingReportLine.objects.create(report=mine, kind="deployment", deployment_name="mock-fast",
                                     amount_usd=Decimal("12.34"))
    html = operator_client.get("/admin/billing/billingreport/").content.decode()
    assert "12.34" in html and "56.78" in html
    detail = operator_client.get(f"/admin/billing/billingreport/{mine.pk}/change/")
    assert detail.status_code == 200 and "mock-fast" in detail.content.decode()
    assert operator_client.post(f"/admin/billing/billingreport/{mine.pk}/delete/", {"post": "yes"}).status_code == 403
    assert operator_client.get("/admin/billing/billingreport/add/").status_code == 403
    assert operator_client.get("/admin/billing/billingreportline/").status_code == 200
    assert BillingReport.objects.count() == 2
