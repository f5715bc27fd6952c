"""The overview page (billing/views/overview.py): every role's landing page."""
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import Budget, UsageRecord
from tenants.services import api_key_create
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def personas(db):
    return make_personas()


def url(personas):
    return f"/orgs/{personas.org.slug}/"


def add_usage(org, count, *, started_at=None, **fields):
    key = api_key_create(org=org, name="k").api_key
    values = dict(org=org, api_key=key, requested_model="gpt-4-turbo", deployment_name="gpt-4-turbo",
                  status="completed", prompt_tokens=100, completion_tokens=20, cost_usd=Decimal("0.0016"),
                  started_at=started_at or timezone.now())
    values.update(fields)
    UsageRecord.objects.bulk_create([UsageRecord(**values) for _ in range(count)])


@pytest.mark.parametrize("persona", ["owner", "admin", "auditor", "member"])
def test_every_role_sees_todays_and_this_months_figures(client, personas, persona):
    add_usage(personas.org, 3)
    add_usage(personas.org, 1, status="upstream_error", cost_usd=Decimal("0"), prompt_tokens=0, completion_tokens=0)
    page = personas.client_for(client, persona).get(url(personas))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Overview" in html and "$0.0048" in html and "gpt-4-turbo" in html
    assert page.context["today"].requests == 4 and page.context["today"].errors == 1
    assert page.context["month"].cost_usd == Decimal("0.0048")


def test_a_member_sees_no_links_to_admin_or_overseer_pages(client, personas):
    Budget.objects.create(org=personas.org, name="monthly cap", window="month", limit_usd=Decimal("50"))
    html = personas.client_for(client, "member").get(url(personas)).content.decode()
    assert "/admin/" not in html and "/budgets/" not in html and "/keys/" not in html
    assert "monthly cap" in html and "$50" in html


def test_an_owner_is_offered_the_budgets_page(client, personas):
    html = personas.client_for(client, "owner").get(url(personas)).content.decode()
    assert f"/orgs/{personas.org.slug}/budgets/" in html
    assert "No budgets" in html and "No requests this month yet" in html


def test_last_months_usage_is_not_in_this_months_figures(client, personas):
    first_of_month = timezone.now().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    add_usage(personas.org, 2, started_at=first_of_month - timedelta(seconds=1))
    page = personas.client_for(client, "owner").get(url(personas))
    assert page.context["month"].requests == 0 and page.context["top_models"] == []


def test_another_orgs_usage_never_shows(client, personas):
    add_usage(personas.other_org, 5, deployment_name="their-secret-model")
    page = personas.client_for(client, "owner").get(url(personas))
    assert page.context["month"].requests == 0 and "their-secret-model" not in page.content.decode()


def test_the_outsider_gets_404_and_anonymous_the_login_page(client, personas):
    assert personas.client_for(client, "outsider").get(url(personas)).status_code == 404
    client.logout()
    answer = client.get(url(personas))
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/accounts/login/")


def test_the_number_of_queries_does_not_grow_with_usage_or_budgets(client, personas, django_assert_max_num_queries):
    for n in range(30):
        add_usage(personas.org, 20, deployment_name=f"model-{n % 7}")
        Budget.objects.create(org=personas.org, name=f"budget {n}", window="day", limit_usd=Decimal("5"),
                              scope="key", api_key=api_key_create(org=personas.org, name=f"b{n}").api_key)
    client = personas.client_for(client, "owner")
    # Budget status: counters + the spend of those without one; month to date and top models:
    # the rollups' mark, then rollups before it and usage records after (billing/selectors.py).
    with django_assert_max_num_queries(14):
        page = client.get(url(personas))
    assert page.status_code == 200 and page.context["month"].requests == 600
    assert len(page.context["top_models"]) == 5
