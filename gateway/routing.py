"""Turning the name a client sent into deployments to try, with the reason why.

Name resolution (docs/architecture.md): org route > org deployment > platform
route > platform deployment. A route orders its candidates by its strategy
(`gateway.strategies`); the pipeline (`gateway.pipeline`) tries them in that
order until one produces a first token. The key's allow-list applies to the name
the client sent and to every name resolved for it (a rule's choice, a budget's
fallback route): a key allowed a route may be served by that route's candidates,
and by nothing a name outside its list would resolve to.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.db.models import Q

from billing.models import RateCard
from catalog.models import Deployment, Route
from catalog.targets import Target
from gateway.freshness import FreshCache
from gateway.health import health
from gateway.protocol import ErrorCode, GatewayError
from gateway.strategies import Candidate, order_candidates
from tenants.access import KeyPrincipal

if TYPE_CHECKING:
    from gateway.policies import PolicyOutcome

log = logging.getLogger(__name__)


@dataclass
class RouteDecision:
    """The deployments to try, in order, and why. `attempts` fills in as they fail."""

    candidates: list[Target]
    strategy: str
    reason: str
    route: str | None = None  # the route alias, when a route was used
    route_id: int | None = None
    budget_fallbacks: list[dict[str, Any]] = field(default_factory=list)  # filtered budgets that re-routed it
    max_attempts: int = 1
    attempts: list[dict[str, Any]] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)  # routing-policy rules that matched

    @property
    def target(self) -> Target:
        return self.candidates[0]

    def explain(self, served_by: Target | None = None) -> dict[str, Any]:
        """The `route` object of llm_response_start (also stored with the usage)."""
        target = served_by or self.target
        reason = self.reason
        if self.attempts:
            last = self.attempts[-1]
            reason = f"fallback after {last['error']} from {last['deployment']}"
        explained = {
            "deployment": target.name,
            "provider": target.provider,
            "strategy": self.strategy,
            "route": self.route,
            "rule": ", ".join(self.rules) or None,
            "reason": reason,
            "attempts": list(self.attempts),
        }
        if self.budget_fallbacks:
            explained["budget_fallback"] = list(self.budget_fallbacks)
            last = self.budget_fallbacks[-1]
            explained["reason"] = f"budget {last['budget']!r} reached its limit on {last['from']!r}; {reason}"
        return explained


@dataclass(frozen=True)
class _Found:
    """What the database says about a name for one org (cached briefly)."""

    kind: str  # "route", "deployment" or "" (not found)
    owner: str = ""
    deployment: Target | None = None
    deployment_enabled: bool = False
    route_alias: str = ""
    route_id: int | None = None
    strategy: str = ""
    max_attempts: int = 1
    candidates: tuple[Candidate, ...] = ()


def find_deployment(org_id: int, name: str) -> _Found:
    """Resolve `name` for an org: org route > org deployment > platform route > platform deployment."""
    routes = {r.org_id: r for r in Route.objects.filter(Q(org_id=org_id) | Q(org__isnull=True), alias=name,
                                                         enabled=True)}
    deployments = {d.org_id: d for d in Deployment.objects.select_related("credential")
                   .filter(Q(org_id=org_id) | Q(org__isnull=True), name=name)}
    rate_cards = tuple(RateCard.objects.filter(org_id=org_id))
    for owner_id, owner in ((org_id, "org"), (None, "platform")):
        if owner_id in routes:
            return _route_found(routes[owner_id], owner, rate_cards)
        if owner_id in deployments:
            deployment = deployments[owner_id]
            return _Found(kind="deployment", owner=owner, deployment=Target.from_deployment(deployment, rate_cards),
                          deployment_enabled=deployment.enabled)
    return _Found(kind="")


def _route_found(route: Route, owner: str, rate_cards: tuple) -> _Found:
    candidates = []
    for candidate in route.candidates.select_related("deployment", "deployment__credential"):
        deployment = candidate.deployment
        if not deployment.enabled:
            continue
        if route.required_tags and not set(route.required_tags) <= set(deployment.tags or ()):
            continue
        if route.min_context_window and deployment.context_window < route.min_context_window:
            continue
        if route.region and deployment.region != route.region:
            continue
        candidates.append(Candidate(target=Target.from_deployment(deployment, rate_cards), weight=candidate.weight,
                                    position=candidate.position))
    return _Found(kind="route", owner=owner, route_alias=route.alias, route_id=route.pk, strategy=route.strategy,
                  max_attempts=route.max_attempts, candidates=tuple(candidates))


def _decide(name: str, found: _Found, request_id: str, *, strategy: str | None = None) -> RouteDecision:
    if found.kind == "":
        raise GatewayError(ErrorCode.NOT_FOUND, f"unknown model or route {name!r}", request_id=request_id)
    if found.kind == "deployment":
        if not found.deployment_enabled:
            raise GatewayError(ErrorCode.NO_HEALTHY_DEPLOYMENT, f"{name!r} is temporarily unavailable",
                               request_id=request_id, retryable=True, retry_after_ms=5_000)
        return RouteDecision(candidates=[found.deployment], strategy="direct",
                             reason=f"{found.owner} deployment named {name!r}")
    if not found.candidates:
        raise GatewayError(ErrorCode.NO_HEALTHY_DEPLOYMENT,
                           f"route {name!r} has no enabled deployment meeting its requirements",
                           request_id=request_id, retryable=True, retry_after_ms=5_000)
    strategy = strategy or found.strategy
    ordered, reason = order_candidates(strategy, list(found.candidates), health=health, rng=_rng)
    if not ordered:
        raise GatewayError(ErrorCode.NO_HEALTHY_DEPLOYMENT, f"route {name!r}: {reason}", request_id=request_id,
                           retryable=True, retry_after_ms=1_000)
    return RouteDecision(candidates=[c.target for c in ordered], strategy=strategy, reason=reason,
                         route=found.route_alias, route_id=found.route_id, max_attempts=found.max_attempts)


_rng = random.Random()


async def _refresh_shared_counts(found: _Found, strategy: str | None) -> None:
    """With Redis, read every process's in-flight and per-minute counts for the
    candidates whose caps (or the least-busy strategy) need them: one round trip."""
    if health.sharing is None or found.kind != "route":
        return
    least_busy = (strategy or found.strategy) == "least_busy"
    ids = [c.target.deployment_id for c in found.candidates
           if least_busy or c.target.rpm_limit or c.target.tpm_limit or c.target.max_concurrency]
    if ids:
        try:
            await health.sharing.refresh_counts(ids)
        except Exception:
            log.warning("shared deployment counts unavailable; using this process's", exc_info=True)


def _check_allowed(principal: KeyPrincipal, name: str, request_id: str) -> None:
    if not principal.may_request(name):
        raise GatewayError(ErrorCode.FORBIDDEN, f"this API key may not use {name!r}", request_id=request_id)


# Resolution results are kept this long per (org, name) in each process: a
# route or deployment edited or disabled in the admin is seen within this time,
# and the request path skips a database round trip (and Channels' shared DB
# thread) almost always. Strategies run on every request, on live health.
_resolution_cache = FreshCache()  # (org id, name) -> _Found


async def resolve_model_cached(principal: KeyPrincipal, name: str, *, request_id: str,
                               policy: "PolicyOutcome | None" = None) -> RouteDecision:
    """Resolve the name the client sent (after its allow-list check), or what a
    routing policy chose instead, with the policy's strategy if it set one.

    The allow-list holds for what is finally resolved: a policy choosing a route or
    deployment the key may not use is ignored (the name sent is served, which the
    key may use); a key allowed a route may be served by any of its candidates."""
    _check_allowed(principal, name, request_id)
    if policy is not None and policy.name != name and not principal.may_request(policy.name):
        log.info("routing rules %s skipped for key %s: their choice is outside its allow-list",
                 ", ".join(policy.rules), principal.key_prefix)
        policy = None
    if policy is not None and policy.name != name:
        name = policy.name
    org_id = principal.org_id
    found = await _resolution_cache.get_or_load(
        (org_id, name), lambda: database_sync_to_async(find_deployment)(org_id, name))
    strategy = policy.strategy if policy is not None else None
    await _refresh_shared_counts(found, strategy)
    decision = _decide(name, found, request_id, strategy=strategy)
    if policy is not None and policy.rules:
        decision.rules = list(policy.rules)
    return decision


def reset() -> None:
    """Forget the cached model-name resolutions (gateway.runtime.reset)."""
    _resolution_cache.clear()
