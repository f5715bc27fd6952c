"""Turning the name a client sent into a deployment to call, with the reason why.

Name resolution (docs/architecture.md): org deployment > platform deployment.
Routes (aliases with strategies) slot in ahead of deployments at each level.
The key's allow-list applies to the name the client sent.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Q

from billing.money import Prices
from gateway.models import Deployment
from gateway.protocol import ErrorCode, GatewayError
from tenants.access import KeyPrincipal


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
    connect_timeout_s: float
    first_token_timeout_s: float
    idle_timeout_s: float
    total_timeout_s: float

    @classmethod
    def from_deployment(cls, deployment: Deployment) -> "Target":
        return cls(
            deployment_id=deployment.pk,
            name=deployment.name,
            provider=deployment.provider,
            litellm_model=deployment.litellm_model,
            api_base=deployment.api_base,
            api_key=deployment.credential.get_secret() if deployment.credential_id else None,
            extra_params=dict(deployment.extra_params or {}),
            prices=Prices(deployment.input_price_per_mtok, deployment.output_price_per_mtok),
            context_window=deployment.context_window,
            max_output_tokens=deployment.max_output_tokens,
            connect_timeout_s=deployment.connect_timeout_ms / 1000,
            first_token_timeout_s=deployment.first_token_timeout_ms / 1000,
            idle_timeout_s=deployment.idle_timeout_ms / 1000,
            total_timeout_s=deployment.total_timeout_ms / 1000,
        )


@dataclass(frozen=True)
class RouteDecision:
    target: Target
    strategy: str
    reason: str
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def explain(self) -> dict[str, Any]:
        """The `route` object of llm_response_start (also stored with the usage)."""
        return {
            "deployment": self.target.name,
            "provider": self.target.provider,
            "strategy": self.strategy,
            "reason": self.reason,
            "attempts": list(self.attempts),
        }


@dataclass(frozen=True)
class _Found:
    """What the database says about a name for one org (cached briefly)."""

    target: Target | None
    enabled: bool = False
    owner: str = ""


def find_deployment(org_id: int, name: str) -> _Found:
    candidates = list(
        Deployment.objects.select_related("credential").filter(Q(org_id=org_id) | Q(org__isnull=True), name=name)
    )
    # An org's own deployment shadows a platform one of the same name.
    candidates.sort(key=lambda d: d.org_id is None)
    if not candidates:
        return _Found(target=None)
    deployment = candidates[0]
    return _Found(target=Target.from_deployment(deployment), enabled=deployment.enabled,
                  owner="org" if deployment.org_id else "platform")


def _decide(principal: KeyPrincipal, name: str, found: _Found, request_id: str) -> RouteDecision:
    if found.target is None:
        raise GatewayError(ErrorCode.NOT_FOUND, f"unknown model or route {name!r}", request_id=request_id)
    if not found.enabled:
        raise GatewayError(ErrorCode.NO_HEALTHY_DEPLOYMENT, f"{name!r} is temporarily unavailable",
                           request_id=request_id, retryable=True, retry_after_ms=5_000)
    return RouteDecision(target=found.target, strategy="direct", reason=f"{found.owner} deployment named {name!r}")


def _check_allowed(principal: KeyPrincipal, name: str, request_id: str) -> None:
    if not principal.may_request(name):
        raise GatewayError(ErrorCode.FORBIDDEN, f"this API key may not use {name!r}", request_id=request_id)


def resolve_model(principal: KeyPrincipal, name: str, *, request_id: str) -> RouteDecision:
    """Pick the deployment for `name` or raise GatewayError 403/404/503 (reads the database)."""
    _check_allowed(principal, name, request_id)
    return _decide(principal, name, find_deployment(principal.org_id, name), request_id)


# Resolution results are kept this long per (org, name) in each process: a
# deployment edited or disabled in the admin is seen within this time, and the
# request path skips a database round trip (and Channels' shared DB thread)
# almost always.
RESOLUTION_CACHE_SECONDS = 1.0
_resolution_cache: dict[tuple[int, str], tuple[float, _Found]] = {}


async def resolve_model_cached(principal: KeyPrincipal, name: str, *, request_id: str) -> RouteDecision:
    _check_allowed(principal, name, request_id)
    key = (principal.org_id, name)
    now = time.monotonic()
    cached = _resolution_cache.get(key)
    if cached is None or cached[0] <= now:
        found = await database_sync_to_async(find_deployment)(principal.org_id, name)
        if len(_resolution_cache) > 10_000:
            _resolution_cache.clear()
        _resolution_cache[key] = (now + RESOLUTION_CACHE_SECONDS, found)
    else:
        found = cached[1]
    return _decide(principal, name, found, request_id)
