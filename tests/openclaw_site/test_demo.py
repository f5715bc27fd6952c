"""The demo tenant (openclaw_site/demo.py): one org with an admin login and a dashboard
login, the mock deployments and route, and a fresh key each time — set up any number of
times without duplicates, following the mock LLM to a new address, keeping an admin's
edits; under `make run`, a week of sample traffic written once."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from billing.models import Budget, UsageDailyRollup, UsageRecord
from billing.selectors import usage_figures
from catalog.models import Deployment, ProviderCredential, Route
from openclaw_site.demo import (
    ADMIN_USERNAME,
    AUDITOR_USERNAME,
    DEMO_MODELS,
    DEMO_ORG,
    DEMO_ROUTE,
    OWNER_USERNAME,
    SAMPLE_REQUESTS,
    demo_setup,
    demo_traffic_seed,
)
from tenants.access import authenticate_api_key
from tenants.audit import verify_chain
from tenants.models import ApiKey, AuditEvent, Membership, Organization

pytestmark = [pytest.mark.django_db]


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path  # the admin password file is written here


def test_the_demo_tenant_is_set_up_with_a_working_key(settings):
    demo = demo_setup(mock_api_base="http://127.0.0.1:8100/v1")
    assert demo.org.slug == DEMO_ORG and demo.admin_username == ADMIN_USERNAME
    assert authenticate_api_key(demo.api_key).org_id == demo.org.pk
    assert demo.admin_password == (settings.DATA_DIR / "admin_password").read_text().strip()
    assert sorted(Deployment.objects.filter(org=None).values_list("name", flat=True)) == sorted(
        spec["name"] for spec in DEMO_MODELS)
    route = Route.objects.get(org=None, alias=DEMO_ROUTE["alias"])
    assert [c.deployment.name for c in route.candidates.order_by("position")] == list(DEMO_ROUTE["candidates"])


def test_setting_it_up_again_adds_nothing_but_a_new_key_and_follows_the_mock():
    first = demo_setup(mock_api_base="http://127.0.0.1:8100/v1")
    route = Route.objects.get(alias=DEMO_ROUTE["alias"])
    route.candidates.order_by("position").last().delete()  # an admin's edit
    second = demo_setup(mock_api_base="http://127.0.0.1:9100/v1")
    assert second.api_key != first.api_key and second.admin_password == first.admin_password
    assert authenticate_api_key(first.api_key) and authenticate_api_key(second.api_key)
    assert Organization.objects.filter(slug=DEMO_ORG).count() == 1
    assert ProviderCredential.objects.filter(org=None, name="mock").count() == 1
    assert Deployment.objects.filter(org=None).count() == len(DEMO_MODELS)
    assert set(Deployment.objects.values_list("api_base", flat=True)) == {"http://127.0.0.1:9100/v1"}
    assert Route.objects.get(alias=DEMO_ROUTE["alias"]).candidates.count() == len(DEMO_ROUTE["candidates"]) - 1


def test_the_dashboard_login_is_an_owner_who_is_not_staff(settings, client):
    demo = demo_setup(mock_api_base="http://127.0.0.1:8100/v1")
    assert demo.dashboard_username == OWNER_USERNAME
    password_file = settings.DATA_DIR / "demo_password"
    assert demo.dashboard_password == password_file.read_text().strip()
    assert password_file.stat().st_mode & 0o777 == 0o600
    owner = get_user_model().objects.get(username=OWNER_USERNAME)
    assert not owner.is_staff and not owner.is_superuser
    assert Membership.objects.get(user=owner).role == "owner"
    answer = client.post("/accounts/login/", {"username": OWNER_USERNAME, "password": demo.dashboard_password})
    assert answer.status_code == 302 and client.get("/").headers["Location"] == f"/orgs/{DEMO_ORG}/"
    again = demo_setup(mock_api_base="http://127.0.0.1:8100/v1")
    assert again.dashboard_password == demo.dashboard_password
    assert get_user_model().objects.filter(username=OWNER_USERNAME).count() == 1


def test_sample_traffic_is_written_once_with_exact_costs_and_audited_changes(settings):
    demo = demo_setup(mock_api_base="http://127.0.0.1:8100/v1", sample_traffic=True)
    records = list(UsageRecord.objects.filter(org=demo.org))
    assert len(records) == SAMPLE_REQUESTS
    now = datetime.now(timezone.utc)
    assert all(now - timedelta(days=7, minutes=1) <= r.started_at <= now for r in records)
    today = [r for r in records if r.started_at.date() == now.date()]
    assert len(today) >= 6
    statuses = [r.status for r in records]
    assert statuses.count("upstream_error") == 2 and statuses.count("upstream_timeout") == 1
    assert statuses.count("cancelled") == 1
    assert {r.deployment_name for r in records} == {"gpt-4-turbo", "claude-3-opus"}
    assert len({r.api_key_id for r in records}) == 2 and len({r.end_user for r in records}) > 2
    for r in records:
        expected = (r.input_price_per_mtok * r.prompt_tokens + r.output_price_per_mtok * r.completion_tokens) / 10**6
        assert r.cost_usd == expected and r.cost_usd.as_tuple().exponent >= -12
    week = usage_figures(org=demo.org, start=now - timedelta(days=8), end=now + timedelta(seconds=1))
    assert week.cost_usd == sum((r.cost_usd for r in records), Decimal(0)) and week.errors == 3
    assert UsageDailyRollup.objects.filter(org=demo.org).exists()
    auditor = Membership.objects.get(org=demo.org, user__username=AUDITOR_USERNAME)
    assert auditor.role == "auditor" and not auditor.user.is_staff
    assert Budget.objects.filter(org=demo.org).count() == 1
    actions = set(AuditEvent.objects.filter(org=demo.org, actor=OWNER_USERNAME).values_list("action", flat=True))
    assert actions == {"api_key.create", "membership.set", "budget.create"}
    assert verify_chain(str(demo.org.public_id)) == (True, None)
    # Again (every `make run`): nothing more than this run's key.
    keys = ApiKey.objects.filter(org=demo.org).count()
    demo_setup(mock_api_base="http://127.0.0.1:8100/v1", sample_traffic=True)
    assert UsageRecord.objects.filter(org=demo.org).count() == SAMPLE_REQUESTS
    assert ApiKey.objects.filter(org=demo.org).count() == keys + 1
    assert Budget.objects.filter(org=demo.org).count() == 1
    assert Membership.objects.filter(org=demo.org).count() == 3


def test_setup_without_sample_traffic_writes_no_usage():
    demo = demo_setup(mock_api_base="http://127.0.0.1:8100/v1")
    assert not UsageRecord.objects.filter(org=demo.org).exists()
    assert not Budget.objects.filter(org=demo.org).exists()


def test_the_demo_overview_shows_the_sample_traffic(client):
    demo = demo_setup(mock_api_base="http://127.0.0.1:8100/v1", sample_traffic=True)
    client.post("/accounts/login/", {"username": OWNER_USERNAME, "password": demo.dashboard_password})
    page = client.get(f"/orgs/{DEMO_ORG}/")
    assert page.status_code == 200 and page.context["today"].requests >= 6
    html = page.content.decode()
    assert "gpt-4-turbo" in html and "Monthly spend" in html and "$25" in html
