"""A deployment as the gateway calls it: everything needed for one upstream call,
read once from the catalogue (credential decrypted, the org's prices applied) and
detached from the ORM, so the request path never touches the database for it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catalog.models import Deployment
from catalog.money import Prices
from catalog.pricing import base_prices, org_prices


@dataclass(frozen=True)
class Target:
    """Everything needed to call one deployment, detached from the ORM."""

    deployment_id: int
    name: str
    provider: str
    litellm_model: str
    api_base: str
    api_key: str | None
    extra_params: dict[str, Any]
    prices: Prices
    context_window: int
    max_output_tokens: int
    tags: tuple[str, ...]
    region: str
    rpm_limit: int | None
    tpm_limit: int | None
    max_concurrency: int | None
    connect_timeout_s: float
    first_token_timeout_s: float
    idle_timeout_s: float
    total_timeout_s: float
    lean_stream: bool = True  # the lean read may be used (gateway/providers.py)

    @classmethod
    def from_deployment(cls, deployment: Deployment, rate_cards: tuple = ()) -> "Target":
        return cls(
            deployment_id=deployment.pk,
            name=deployment.name,
            provider=deployment.provider,
            litellm_model=deployment.litellm_model,
            api_base=deployment.api_base,
            api_key=deployment.credential.get_secret() if deployment.credential_id else None,
            extra_params=dict(deployment.extra_params or {}),
            prices=org_prices(base_prices(deployment), deployment.pk, rate_cards),
            context_window=deployment.context_window,
            max_output_tokens=deployment.max_output_tokens,
            tags=tuple(deployment.tags or ()),
            region=deployment.region,
            rpm_limit=deployment.rpm_limit,
            tpm_limit=deployment.tpm_limit,
            max_concurrency=deployment.max_concurrency,
            connect_timeout_s=deployment.connect_timeout_ms / 1000,
            first_token_timeout_s=deployment.first_token_timeout_ms / 1000,
            idle_timeout_s=deployment.idle_timeout_ms / 1000,
            total_timeout_s=deployment.total_timeout_ms / 1000,
            lean_stream=deployment.lean_stream,
        )
