"""Platform operators' changes through Django admin are audited (tenants/admin_audit.py),
secrets never shown twice.

Named after the auditing module: the changes go through every app's admin (catalog's
credentials, deployments and routes; billing's budgets and rate cards; tenants' keys and
audit log), and what each admin page refuses is checked here alongside its audit."""
import json
import re
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model

from catalog.models import Deployment, ProviderCredential
from tenants.access import authenticate_api_key
from tenants.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client):
    user = get_user_model().objects.create_superuser("operator", "op@example.com", "correct-horse-battery")
    client.force_login(user)
    return client


def test_creating_a_credential_encrypts_it_and_audits_without_the_secret(operator_client):
    response = operator_client.post("/admin/catalog/providercredential/add/",
                                    {"name": "openai-prod", "provider": "openai", "secret": "sk-live-abcdef123456"})
    assert response.status_code == 302
    credential = ProviderCredential.objects.get(name="openai-prod")
    assert "sk-live" not in credential.encrypted_secret and credential.get_secret() == "sk-live-abcdef123456"
    event = AuditEvent.objects.get(action="credential.create")
    assert event.actor == "operator" and "sk-live" not in str(event.data)
    assert "secret" in event.data["redacted"]


def test_changing_a_deployment_is_audited(operator_client, make_deployment):
    deployment = make_deployment("audited-model")
    page = operator_client.get(f"/admin/catalog/deployment/{deployment.pk}/change/")
    assert page.status_code == 200
    data = {
        "name": "audited-model", "provider": "mock", "litellm_model": "openai/audited-model",
        "api_base": deployment.api_base, "credential": deployment.credential_id, "extra_params": "{}",
        "input_price_per_mtok": "1.25", "output_price_per_mtok": "5", "context_window": 8192,
        "max_output_tokens": 4096, "tags": "[]", "weight": 1, "enabled": "", "connect_timeout_ms": 5000,
        "first_token_timeout_ms": 30000, "idle_timeout_ms": 30000, "total_timeout_ms": 600000,
    }
    response = operator_client.post(f"/admin/catalog/deployment/{deployment.pk}/change/", data)
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
    from catalog.models import Route

    first, second = make_deployment("first-choice"), make_deployment("second-choice")
    data = {
        "alias": "best_available_general", "strategy": "cost", "required_tags": "[]", "region": "",
        "max_attempts": 3, "enabled": "on",
        "candidates-TOTAL_FORMS": 2, "candidates-INITIAL_FORMS": 0, "candidates-MIN_NUM_FORMS": 0,
        "candidates-MAX_NUM_FORMS": 1000,
        "candidates-0-deployment": first.pk, "candidates-0-weight": 1, "candidates-0-position": 0,
        "candidates-1-deployment": second.pk, "candidates-1-weight": 1, "candidates-1-position": 1,
    }
    response = operator_client.post("/admin/catalog/route/add/", data)
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
                                                                               str(budget.public_id))
    assert {"org", "name", "limit_usd"} <= set(event.data["fields"])
    listing = operator_client.get("/admin/billing/budget/")
    assert listing.status_code == 200 and "monthly cap" in listing.content.decode() and "$25" in listing.content.decode()


def test_an_invalid_budget_shows_the_error_in_admin_and_is_not_saved(operator_client, org):
    from billing.models import Budget
    from catalog.models import Route

    cheap = Route.objects.create(alias="cheap", org=org)
    response = operator_client.post("/admin/billing/budget/add/",
                                    _budget_form(org, hard_action="fallback", fallback_route=cheap.pk))
    assert response.status_code == 200
    assert "only a budget filtered to a route or deployment can fall back" in response.content.decode()
    assert not Budget.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="budget.").exists()


def test_a_filtered_fallback_budget_is_listed_with_its_filter_and_action(operator_client, org):
    from billing.models import Budget
    from catalog.models import Route

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


# --- Every admin change to keys, deployments and credentials writes exactly one event ---

ROTATED_SECRET = "sk-rotated-9f8e7d6c5b4a"


def _deployment_form(name, credential):
    return {
        "name": name, "org": "", "provider": "mock", "litellm_model": f"openai/{name}",
        "api_base": "http://127.0.0.1:9/v1", "credential": credential.pk, "extra_params": "{}",
        "input_price_per_mtok": "2.5", "output_price_per_mtok": "10", "context_window": 8192,
        "max_output_tokens": 4096, "tags": "[]", "weight": 1, "enabled": "on", "connect_timeout_ms": 5000,
        "first_token_timeout_ms": 30000, "idle_timeout_ms": 30000, "total_timeout_ms": 600000,
    }


def _key_form(api_key, **fields):
    data = {"name": api_key.name, "allowed_models": json.dumps(api_key.allowed_models),
            "max_tokens_per_request": "", "expires_at_0": "", "expires_at_1": ""}
    data.update(fields)
    return data


def _spare_credential():
    """A credential no deployment uses, so it may be deleted."""
    credential = ProviderCredential(name="spare", provider="openai")
    credential.set_secret("sk-original-0a1b2c3d4e")
    credential.save()
    return credential


# Each change: (client, world) -> (response, [(action, target public_id, fields the event must list)]).

def issue_key(client, world):
    response = client.post("/admin/tenants/apikey/add/", {"org": world.api_key.org_id, "name": "issued here",
                                                          "allowed_models": "[]"})
    issued = ApiKey.objects.get(name="issued here")
    return response, [("api_key.create", issued.public_id, set())]


def create_deployment(client, world):
    response = client.post("/admin/catalog/deployment/add/", _deployment_form("created-here", world.credential))
    created = Deployment.objects.get(name="created-here")
    return response, [("deployment.create", created.public_id, {"name", "litellm_model", "input_price_per_mtok"})]


def delete_deployment(client, world):
    deployment = world.make_deployment("doomed")
    response = client.post(f"/admin/catalog/deployment/{deployment.pk}/delete/", {"post": "yes"})
    assert not Deployment.objects.filter(pk=deployment.pk).exists()
    return response, [("deployment.delete", deployment.public_id, set())]


def bulk_delete_deployments(client, world):
    doomed = [world.make_deployment("doomed-a"), world.make_deployment("doomed-b")]
    response = client.post("/admin/catalog/deployment/", {
        "action": "delete_selected", "_selected_action": [d.pk for d in doomed], "post": "yes"})
    assert not Deployment.objects.filter(pk__in=[d.pk for d in doomed]).exists()
    return response, sorted((("deployment.delete", d.public_id, set()) for d in doomed), key=lambda e: str(e[1]))


def rotate_credential_secret(client, world):
    credential = _spare_credential()
    response = client.post(f"/admin/catalog/providercredential/{credential.pk}/change/",
                           {"org": "", "name": credential.name, "provider": "openai", "secret": ROTATED_SECRET})
    credential.refresh_from_db()
    assert credential.get_secret() == ROTATED_SECRET and credential.last_four == ROTATED_SECRET[-4:]
    return response, [("credential.update", credential.public_id, {"secret"})]


def delete_credential(client, world):
    credential = _spare_credential()
    response = client.post(f"/admin/catalog/providercredential/{credential.pk}/delete/", {"post": "yes"})
    assert not ProviderCredential.objects.filter(pk=credential.pk).exists()
    return response, [("credential.delete", credential.public_id, set())]


def bulk_delete_credentials(client, world):
    credential = _spare_credential()
    response = client.post("/admin/catalog/providercredential/", {
        "action": "delete_selected", "_selected_action": [credential.pk], "post": "yes"})
    assert not ProviderCredential.objects.filter(pk=credential.pk).exists()
    return response, [("credential.delete", credential.public_id, set())]


def restrict_key_models(client, world):
    api_key = world.api_key
    response = client.post(f"/admin/tenants/apikey/{api_key.pk}/change/",
                           _key_form(api_key, allowed_models='["gpt-4-turbo"]'))
    api_key.refresh_from_db()
    assert api_key.allowed_models == ["gpt-4-turbo"]
    return response, [("api_key.update", api_key.public_id, {"allowed_models"})]


def set_key_expiry(client, world):
    api_key = world.api_key
    response = client.post(f"/admin/tenants/apikey/{api_key.pk}/change/",
                           _key_form(api_key, expires_at_0="2031-01-02", expires_at_1="03:04:05"))
    api_key.refresh_from_db()
    assert api_key.expires_at.isoformat() == "2031-01-02T03:04:05+00:00"
    return response, [("api_key.update", api_key.public_id, {"expires_at"})]


@pytest.fixture
def world(make_deployment, mock_credential, issued_key):
    return SimpleNamespace(make_deployment=make_deployment, credential=mock_credential, api_key=issued_key.api_key)


@pytest.mark.parametrize("change", [
    create_deployment, delete_deployment, bulk_delete_deployments, rotate_credential_secret, delete_credential,
    bulk_delete_credentials, issue_key, restrict_key_models, set_key_expiry,
], ids=lambda change: change.__name__)
def test_each_admin_change_writes_exactly_one_audit_event(operator_client, world, change):
    before = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    response, expected = change(operator_client, world)
    assert response.status_code == 302, response.content.decode()[:3000]
    events = sorted(AuditEvent.objects.filter(pk__gt=before), key=lambda e: (e.action, e.target_id))
    assert [(e.action, e.target_id) for e in events] == [(action, str(target)) for action, target, _ in expected]
    for event, (_, _, fields) in zip(events, expected):
        assert event.actor == "operator" and event.actor_type == AuditEvent.ActorType.USER
        if fields:
            assert fields <= set(event.data["fields"]), event.data
        # A credential's secret is named as changed, never copied: not the new one, not the old one.
        stored = json.dumps(event.data)
        assert ROTATED_SECRET not in stored and "sk-original" not in stored
        if "secret" in fields:
            assert event.data["redacted"] == ["secret"]


def test_a_protected_credential_is_not_deleted_and_nothing_is_audited(operator_client, make_deployment,
                                                                     mock_credential):
    make_deployment("still-using-it")  # its deployment protects the credential
    before = AuditEvent.objects.count()
    response = operator_client.post(f"/admin/catalog/providercredential/{mock_credential.pk}/delete/", {"post": "yes"})
    assert response.status_code == 200 and ProviderCredential.objects.filter(pk=mock_credential.pk).exists()
    assert AuditEvent.objects.count() == before


def test_keys_cannot_be_deleted_in_admin_only_revoked(operator_client, issued_key):
    # Bulk "delete selected" is not offered for keys: usage records keep pointing at them.
    listing = operator_client.get("/admin/tenants/apikey/").content.decode()
    assert 'value="revoke_keys"' in listing and 'value="delete_selected"' not in listing
    response = operator_client.post(f"/admin/tenants/apikey/{issued_key.api_key.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403 and ApiKey.objects.filter(pk=issued_key.api_key.pk).exists()


def test_the_org_form_offers_the_time_zone_as_a_choice_of_known_zones(operator_client, org):
    page = operator_client.get(f"/admin/tenants/organization/{org.pk}/change/")
    assert page.status_code == 200
    form = page.context["adminform"].form
    assert form["time_zone"].value() == "UTC"
    assert "Europe/Paris" in dict(form.fields["time_zone"].choices)
    assert "Mars/Olympus_Mons" not in dict(form.fields["time_zone"].choices)
