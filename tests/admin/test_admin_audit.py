"""Platform operators' changes through Django admin are audited, secrets never shown twice."""
import re
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from gateway.models import Deployment, ProviderCredential
from tenants.access import authenticate_api_key
from tenants.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "correct-horse-battery")
    client.force_login(user)
    return client


def test_creating_a_credential_encrypts_it_and_audits_without_the_secret(operator_client):
    response = operator_client.post("/admin/gateway/providercredential/add/",
                                    {"name": "openai-prod", "provider": "openai", "secret": "sk-live-abcdef123456"})
    assert response.status_code == 302
    credential = ProviderCredential.objects.get(name="openai-prod")
    assert "sk-live" not in credential.encrypted_secret and credential.get_secret() == "sk-live-abcdef123456"
    event = AuditEvent.objects.get(action="credential.create")
    assert event.actor == "operator" and "sk-live" not in str(event.data)
    assert "secret" in event.data["redacted"]


def test_changing_a_deployment_is_audited(operator_client, make_deployment):
    deployment = make_deployment("audited-model")
    page = operator_client.get(f"/admin/gateway/deployment/{deployment.pk}/change/")
    assert page.status_code == 200
    data = {
        "name": "audited-model", "provider": "mock", "litellm_model": "openai/audited-model",
        "api_base": deployment.api_base, "credential": deployment.credential_id, "extra_params": "{}",
        "input_price_per_mtok": "1.25", "output_price_per_mtok": "5", "context_window": 8192,
        "max_output_tokens": 4096, "tags": "[]", "weight": 1, "enabled": "", "connect_timeout_ms": 5000,
        "first_token_timeout_ms": 30000, "idle_timeout_ms": 30000, "total_timeout_ms": 600000,
    }
    response = operator_client.post(f"/admin/gateway/deployment/{deployment.pk}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    deployment.refresh_from_db()
    assert not deployment.enabled and str(deployment.input_price_per_mtok) == "1.250000"
    event = AuditEvent.objects.get(action="deployment.update")
    assert {"enabled", "input_price_per_mtok"} <= set(event.data["fields"])


def test_issuing_a_key_in_admin_shows_it_once_and_audits(operator_client, org):
    response = operator_client.post("/admin/tenants/apikey/add/",
                                    {"org": org.pk, "name": "from admin", "allowed_models": "[]"}, follow=True)
    assert response.status_code == 200
    raw = re.search(r"ocw_[a-z0-9]{10}_[A-Za-z0-9_-]{43}", response.content.decode()).group(0)
    assert authenticate_api_key(raw).org_slug == org.slug
    key = ApiKey.objects.get(name="from admin")
    assert AuditEvent.objects.filter(action="api_key.create", target_id=str(key.public_id), actor="operator").exists()
    listing = operator_client.get("/admin/tenants/apikey/").content.decode()
    assert raw not in listing


def test_revoking_keys_in_admin_is_audited(operator_client, issued_key):
    response = operator_client.post("/admin/tenants/apikey/", {"action": "revoke_keys",
                                                               "_selected_action": [issued_key.api_key.pk]})
    assert response.status_code == 302
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).revoked_at is not None
    assert AuditEvent.objects.filter(action="api_key.revoke", actor="operator").count() == 1


def test_the_audit_log_cannot_be_edited_in_admin(operator_client, org):
    event = AuditEvent.objects.filter(org=org).first()
    assert operator_client.post(f"/admin/tenants/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_a_route_with_candidates_is_created_in_admin_and_audited(operator_client, make_deployment):
    from gateway.models import Route

    first, second = make_deployment("first-choice"), make_deployment("second-choice")
    data = {
        "alias": "best_available_general", "strategy": "cost", "required_tags": "[]", "region": "",
        "max_attempts": 3, "enabled": "on",
        "candidates-TOTAL_FORMS": 2, "candidates-INITIAL_FORMS": 0, "candidates-MIN_NUM_FORMS": 0,
        "candidates-MAX_NUM_FORMS": 1000,
        "candidates-0-deployment": first.pk, "candidates-0-weight": 1, "candidates-0-position": 0,
        "candidates-1-deployment": second.pk, "candidates-1-weight": 1, "candidates-1-position": 1,
    }
    response = operator_client.post("/admin/gateway/route/add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    route = Route.objects.get(alias="best_available_general")
    assert [c.deployment.name for c in route.candidates.all()] == ["first-choice", "second-choice"]
    assert AuditEvent.objects.filter(action="route.create", actor="operator").exists()
    assert AuditEvent.objects.filter(action="route.candidates.update").exists()


def _budget_form(org, **fields):
    data = {
        "org": org.pk, "name": "monthly cap", "scope": "org", "api_key": "", "window": "month",
        "limit_usd": "25", "limit_tokens": "", "route": "", "deployment": "", "soft_threshold_percent": 80,
        "hard_action": "block", "fallback_route": "", "enabled": "on",
    }
    data.update(fields)
    return data


def test_a_budget_is_created_in_admin_and_audited(operator_client, org):
    from billing.models import Budget

    response = operator_client.post("/admin/billing/budget/add/", _budget_form(org))
    assert response.status_code == 302, response.content.decode()[:3000]
    budget = Budget.objects.get(name="monthly cap")
    assert (budget.org_id, budget.scope, budget.window, str(budget.limit_usd)) == (org.pk, "org", "month",
                                                                                  "25.000000000")
    event = AuditEvent.objects.get(action="budget.create")
    assert (event.actor, event.org_id, event.target_type, event.target_id) == ("operator", org.pk, "budget",
                                                                               str(budget.pk))
    assert {"org", "name", "limit_usd"} <= set(event.data["fields"])
    listing = operator_client.get("/admin/billing/budget/")
    assert listing.status_code == 200 and "monthly cap" in listing.content.decode() and "$25" in listing.content.decode()


def test_an_invalid_budget_shows_the_error_in_admin_and_is_not_saved(operator_client, org):
    from billing.models import Budget
    from gateway.models import Route

    cheap = Route.objects.create(alias="cheap", org=org)
    response = operator_client.post("/admin/billing/budget/add/",
                                    _budget_form(org, hard_action="fallback", fallback_route=cheap.pk))
    assert response.status_code == 200
    assert "only a budget filtered to a route or deployment can fall back" in response.content.decode()
    assert not Budget.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="budget.").exists()


def test_a_filtered_fallback_budget_is_listed_with_its_filter_and_action(operator_client, org):
    from billing.models import Budget
    from gateway.models import Route

    premium, cheap = Route.objects.create(alias="premium", org=org), Route.objects.create(alias="cheap", org=org)
    response = operator_client.post("/admin/billing/budget/add/", _budget_form(
        org, name="premium cap", limit_usd="", limit_tokens="100000", route=premium.pk, hard_action="fallback",
        fallback_route=cheap.pk))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Budget.objects.get(name="premium cap").fallback_route_id == cheap.pk
    listing = operator_client.get("/admin/billing/budget/").content.decode()
    assert "route premium" in listing and "fall back to cheap" in listing and "100000 tokens" in listing


def test_rate_card_changes_in_admin_are_audited(operator_client, org):
    from billing.models import RateCard

    response = operator_client.post("/admin/billing/ratecard/add/", {
        "org": org.pk, "deployment": "", "multiplier": "0.85", "input_price_per_mtok": "",
        "output_price_per_mtok": ""})
    assert response.status_code == 302, response.content.decode()[:3000]
    card = RateCard.objects.get(org=org)
    assert AuditEvent.objects.filter(action="rate_card.create", actor="operator", target_id=str(card.pk)).exists()
    # Explicit prices without a deployment: the model's validation error is shown, nothing changes.
    response = operator_client.post(f"/admin/billing/ratecard/{card.pk}/change/", {
        "org": org.pk, "deployment": "", "multiplier": "", "input_price_per_mtok": "1",
        "output_price_per_mtok": "2"})
    assert response.status_code == 200 and "explicit prices need a deployment" in response.content.decode()
    card.refresh_from_db()
    assert card.multiplier == Decimal("0.85") and not AuditEvent.objects.filter(action="rate_card.update").exists()
    response = operator_client.post(f"/admin/billing/ratecard/{card.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not RateCard.objects.exists()
    assert AuditEvent.objects.filter(action="rate_card.delete", target_id=str(card.pk)).exists()
