"""Which prices a request is billed at.

A deployment's base prices are its own, or, when it sets none, litellm's price map
for its model (bundled with the pinned litellm release: no network). An org's rate
card then applies: explicit prices for a deployment, else a multiplier for that
deployment, else the org-wide multiplier. The prices applied are stored with each
usage record, so a later change never rewrites history.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Iterable

from catalog.money import Prices, price_per_mtok_from_per_token, scale_price


class PricingError(ValueError):
    pass


def litellm_map_prices(litellm_model: str) -> Prices:
    from catalog.litellm_setup import litellm

    entry = litellm.model_cost.get(litellm_model)
    if entry is None and "/" in litellm_model:
        entry = litellm.model_cost.get(litellm_model.split("/", 1)[1])
    if not entry or entry.get("input_cost_per_token") is None or entry.get("output_cost_per_token") is None:
        raise PricingError(f"litellm's price map has no prices for {litellm_model!r}: set the deployment's prices")
    return Prices(price_per_mtok_from_per_token(entry["input_cost_per_token"]),
                  price_per_mtok_from_per_token(entry["output_cost_per_token"]))


def base_prices(deployment) -> Prices:
    if deployment.input_price_per_mtok is not None and deployment.output_price_per_mtok is not None:
        return Prices(deployment.input_price_per_mtok, deployment.output_price_per_mtok)
    return litellm_map_prices(deployment.litellm_model)


def org_prices(base: Prices, deployment_id: int, rate_cards: Iterable) -> Prices:
    """Apply an org's rate-card lines (RateCard rows of one org) to a deployment's base prices."""
    own = org_wide = None
    for line in rate_cards:
        if line.deployment_id == deployment_id:
            own = line
        elif line.deployment_id is None:
            org_wide = line
    line = own or org_wide
    if line is None:
        return base
    if line.multiplier is None:
        return Prices(line.input_price_per_mtok, line.output_price_per_mtok)
    multiplier = Decimal(line.multiplier)
    return Prices(scale_price(base.input_per_mtok, multiplier), scale_price(base.output_per_mtok, multiplier))
