"""A deployment as the gateway calls it (catalog/targets.py): read once, credential
decrypted, the org's rate card applied, detached from the ORM."""
import dataclasses
from decimal import Decimal

import pytest

from billing.models import RateCard
from catalog.money import Prices
from catalog.targets import Target

pytestmark = [pytest.mark.django_db]


def test_a_target_carries_the_deployment_with_its_secret_and_timeouts_in_seconds(make_deployment):
    deployment = make_deployment("mock-fast", tags=["fast", "cheap"], connect_timeout_ms=1500)
    target = Target.from_deployment(deployment)
    assert (target.deployment_id, target.name, target.litellm_model) == (deployment.pk, "mock-fast",
                                                                         "openai/mock-fast")
    assert target.api_key == "mock-key-for-tests"  # decrypted once, here
    assert target.tags == ("fast", "cheap") and target.connect_timeout_s == 1.5
    assert target.prices == Prices(Decimal("2.50"), Decimal("10.00"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.name = "other"


def test_a_deployment_without_a_credential_has_no_key(make_deployment):
    assert Target.from_deployment(make_deployment("keyless", credential=None)).api_key is None


def test_the_orgs_rate_card_is_applied_its_own_line_before_the_org_wide_one(make_deployment, org):
    deployment = make_deployment("mock-fast")
    org_wide = RateCard(org=org, deployment=None, multiplier=Decimal("2"))
    own = RateCard(org=org, deployment=deployment, input_price_per_mtok=Decimal("1"),
                   output_price_per_mtok=Decimal("3"))
    assert Target.from_deployment(deployment, (org_wide,)).prices == Prices(Decimal("5.00"), Decimal("20.00"))
    assert Target.from_deployment(deployment, (org_wide, own)).prices == Prices(Decimal("1"), Decimal("3"))
    other = make_deployment("mock-other")
    assert Target.from_deployment(deployment, (RateCard(org=org, deployment=other, multiplier=Decimal("2")),)
                                  ).prices == Prices(Decimal("2.50"), Decimal("10.00"))
