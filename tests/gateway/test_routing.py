import pytest

from gateway.protocol import ErrorCode, GatewayError
from gateway.routing import resolve_model
from tenants.access import authenticate_api_key
from tenants.services import api_key_create

pytestmark = pytest.mark.django_db


def principal_for(org, **kwargs):
    return authenticate_api_key(api_key_create(org=org, name="k", **kwargs).raw)


def test_a_platform_deployment_serves_every_org(org, make_deployment):
    make_deployment("shared-model")
    decision = resolve_model(principal_for(org), "shared-model", request_id="r")
    assert decision.target.name == "shared-model"
    assert decision.explain()["provider"] == "mock"


def test_an_org_deployment_shadows_the_platform_one(org, make_deployment):
    make_deployment("gpt-x", input_price="1")
    make_deployment("gpt-x", org=org, input_price="2")
    decision = resolve_model(principal_for(org), "gpt-x", request_id="r")
    assert str(decision.target.prices.input_per_mtok) == "2.000000"
    assert "org deployment" in decision.reason


def test_another_orgs_deployment_is_not_found(org, other_org, make_deployment):
    make_deployment("private-model", org=other_org)
    with pytest.raises(GatewayError) as caught:
        resolve_model(principal_for(org), "private-model", request_id="r")
    assert caught.value.code == ErrorCode.NOT_FOUND


def test_the_allow_list_applies_to_the_name_sent(org, make_deployment):
    make_deployment("allowed")
    make_deployment("other")
    principal = principal_for(org, allowed_models=["allowed"])
    assert resolve_model(principal, "allowed", request_id="r")
    with pytest.raises(GatewayError) as caught:
        resolve_model(principal, "other", request_id="r")
    assert caught.value.code == ErrorCode.FORBIDDEN


def test_a_disabled_deployment_is_unavailable(org, make_deployment):
    make_deployment("off", enabled=False)
    with pytest.raises(GatewayError) as caught:
        resolve_model(principal_for(org), "off", request_id="r")
    assert caught.value.code == ErrorCode.NO_HEALTHY_DEPLOYMENT and caught.value.retryable


def test_the_credential_is_encrypted_at_rest(mock_credential):
    from catalog.models import ProviderCredential

    row = ProviderCredential.objects.get(pk=mock_credential.pk)
    assert "mock-key-for-tests" not in row.encrypted_secret
    assert row.get_secret() == "mock-key-for-tests"
