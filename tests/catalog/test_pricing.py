"""Which prices a request is billed at (catalog/pricing.py): deployment prices,
litellm's bundled price map, org rate cards."""
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from billing.models import RateCard
from catalog.money import Prices
from catalog.pricing import PricingError, base_prices, litellm_map_prices, org_prices
from catalog.models import Deployment

BASE = Prices(Decimal("2.50"), Decimal("10.00"))


def deployment(name="priced", *, org=None, litellm_model=None, input_price="2.50", output_price="10.00"):
    return Deployment.objects.create(
        name=name, org=org, provider="mock", litellm_model=litellm_model or f"openai/{name}",
        input_price_per_mtok=None if input_price is None else Decimal(input_price),
        output_price_per_mtok=None if output_price is None else Decimal(output_price))


# --- base prices --------------------------------------------------------------------------

def test_a_deployment_with_its_own_prices_is_billed_at_them(db):
    prices = base_prices(deployment("gpt-4o-mini-custom", litellm_model="openai/gpt-4o-mini",
                                    input_price="0.20", output_price="0.80"))
    assert prices == Prices(Decimal("0.20"), Decimal("0.80"))


def test_a_deployment_without_prices_uses_litellms_bundled_price_map(db):
    from catalog.litellm_setup import litellm

    entry = litellm.model_cost["gpt-4o-mini"]
    assert (entry["input_cost_per_token"], entry["output_cost_per_token"]) == (1.5e-07, 6e-07), \
        "the pinned litellm's price map changed: update this test"
    prices = base_prices(deployment("mini", litellm_model="openai/gpt-4o-mini", input_price=None, output_price=None))
    assert (str(prices.input_per_mtok), str(prices.output_per_mtok)) == ("0.15", "0.6")
    assert litellm_map_prices("gpt-4o-mini") == prices  # with or without the provider prefix

    gpt4o = litellm.model_cost["gpt-4o"]
    assert (gpt4o["input_cost_per_token"], gpt4o["output_cost_per_token"]) == (2.5e-06, 1e-05)
    prices = litellm_map_prices("openai/gpt-4o")
    assert (str(prices.input_per_mtok), str(prices.output_per_mtok)) == ("2.5", "10")


def test_an_unknown_model_without_prices_cannot_be_priced(db):
    with pytest.raises(PricingError, match="no prices for 'openai/no-such-model-xyz'"):
        litellm_map_prices("openai/no-such-model-xyz")
    unpriced = Deployment(name="unknown", provider="mock", litellm_model="openai/no-such-model-xyz")
    with pytest.raises(PricingError):
        base_prices(unpriced)
    with pytest.raises(ValidationError) as caught:
        unpriced.full_clean()
    [message] = caught.value.message_dict["input_price_per_mtok"]
    assert "litellm's price map has no prices for 'openai/no-such-model-xyz'" in message
    # With its own prices it is fine.
    Deployment(name="unknown", provider="mock", litellm_model="openai/no-such-model-xyz",
               input_price_per_mtok=Decimal("1"), output_price_per_mtok=Decimal("2")).full_clean()
    Deployment(name="mini", provider="openai", litellm_model="openai/gpt-4o-mini").full_clean()


def test_a_deployment_sets_both_prices_or_neither(db):
    half = Deployment(name="half", provider="mock", litellm_model="openai/gpt-4o-mini",
                      input_price_per_mtok=Decimal("1"))
    with pytest.raises(ValidationError, match="set both prices, or neither"):
        half.full_clean()


# --- rate cards -------------------------------------------------------------------------

def rate_card_errors(card) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        card.full_clean()
    return caught.value.message_dict


def test_a_rate_card_line_is_a_multiplier_or_explicit_prices(db, org):
    dep = deployment()
    both = RateCard(org=org, deployment=dep, multiplier=Decimal("0.9"), input_price_per_mtok=Decimal("1"),
                    output_price_per_mtok=Decimal("2"))
    assert "give a multiplier or explicit prices, not both" in rate_card_errors(both)["__all__"]
    neither = RateCard(org=org, deployment=dep)
    assert "give a multiplier, or both input and output prices" in rate_card_errors(neither)["__all__"]
    one_price = RateCard(org=org, deployment=dep, input_price_per_mtok=Decimal("1"))
    assert "give a multiplier, or both input and output prices" in rate_card_errors(one_price)["__all__"]
    RateCard(org=org, deployment=dep, multiplier=Decimal("0.85")).full_clean()
    RateCard(org=org, multiplier=Decimal("1.2")).full_clean()
    RateCard(org=org, deployment=dep, input_price_per_mtok=Decimal("1"),
             output_price_per_mtok=Decimal("2")).full_clean()


def test_explicit_rate_card_prices_need_a_deployment(db, org):
    card = RateCard(org=org, input_price_per_mtok=Decimal("1"), output_price_per_mtok=Decimal("2"))
    assert rate_card_errors(card)["deployment"] == ["explicit prices need a deployment"]


def test_a_rate_card_line_cannot_name_another_orgs_deployment(db, org, other_org):
    theirs = deployment("theirs", org=other_org)
    card = RateCard(org=org, deployment=theirs, multiplier=Decimal("0.5"))
    assert rate_card_errors(card)["deployment"] == ["belongs to another organization"]
    RateCard(org=org, deployment=deployment("mine", org=org), multiplier=Decimal("0.5")).full_clean()


def test_without_a_rate_card_the_base_prices_apply(db, org):
    dep = deployment()
    assert org_prices(BASE, dep.pk, []) == BASE
    other = deployment("other")
    lines = [RateCard.objects.create(org=org, deployment=other, multiplier=Decimal("2"))]
    assert org_prices(BASE, dep.pk, lines) == BASE


def test_an_org_wide_multiplier_scales_the_base_prices_exactly(db, org):
    dep = deployment()
    RateCard.objects.create(org=org, multiplier=Decimal("0.85"))
    prices = org_prices(BASE, dep.pk, list(RateCard.objects.filter(org=org)))
    assert (str(prices.input_per_mtok), str(prices.output_per_mtok)) == ("2.125000", "8.500000")


def test_a_deployments_own_line_beats_the_org_wide_line_in_any_order(db, org):
    dep = deployment()
    org_wide = RateCard.objects.create(org=org, multiplier=Decimal("0.85"))
    own = RateCard.objects.create(org=org, deployment=dep, multiplier=Decimal("1.1"))
    for lines in ([org_wide, own], [own, org_wide]):
        prices = org_prices(BASE, dep.pk, lines)
        assert (str(prices.input_per_mtok), str(prices.output_per_mtok)) == ("2.750000", "11.000000")
    other = deployment("other")
    prices = org_prices(BASE, other.pk, [own, org_wide])
    assert (str(prices.input_per_mtok), str(prices.output_per_mtok)) == ("2.125000", "8.500000")


def test_an_explicit_line_replaces_the_base_prices(db, org):
    dep = deployment()
    RateCard.objects.create(org=org, multiplier=Decimal("0.85"))
    RateCard.objects.create(org=org, deployment=dep, input_price_per_mtok=Decimal("1.75"),
                            output_price_per_mtok=Decimal("7"))
    prices = org_prices(BASE, dep.pk, list(RateCard.objects.filter(org=org)))
    assert prices == Prices(Decimal("1.75"), Decimal("7"))
    assert (str(prices.input_per_mtok), str(prices.output_per_mtok)) == ("1.750000", "7.000000")
