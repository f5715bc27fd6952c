"""Applying routing policies: rules that pick a route, deployment or strategy per request.

The org's rule set is tried first, then the platform's; the first rule set with
a match decides (within it, rules merge as docs/routing-rules.md says). Compiled
rule sets are cached per org in a `FreshCache` (gateway.freshness), so an edit takes
effect without a restart in every process, within about half a second.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.db.models import Q

from catalog.models import RoutingPolicy
from catalog.rules import CompiledRules, RequestFacts, RuleError, compile_rules
from gateway.freshness import FreshCache
from gateway.protocol import LlmRequestFrame
from tenants.access import KeyPrincipal

log = logging.getLogger(__name__)

# Scanning big prompts with many patterns takes milliseconds: do it off the loop.
_EVALUATE_INLINE_MAX_CHARS = 20_000
_cache = FreshCache()  # org id -> its rule sets and the platform's


@dataclass(frozen=True)
class PolicyOutcome:
    name: str  # what to resolve: the route or deployment a rule chose, else the name sent
    strategy: str | None
    rules: tuple[str, ...]


def load_policies(org_id: int) -> tuple[CompiledRules, ...]:
    policies = sorted(RoutingPolicy.objects.filter(Q(org_id=org_id) | Q(org__isnull=True)),
                      key=lambda p: p.org_id is None)
    compiled = []
    for policy in policies:
        try:
            compiled.append(compile_rules(policy.rules))
        except RuleError as exc:  # saved around validation (e.g. a raw UPDATE): skip, loudly
            log.error("routing policy %s is invalid and ignored: %s", policy.public_id, exc)
    return tuple(compiled)


async def apply_policies(principal: KeyPrincipal, frame: LlmRequestFrame,
                         messages: list[dict]) -> PolicyOutcome:
    org_id = principal.org_id
    rule_sets = await _cache.get_or_load(org_id, lambda: database_sync_to_async(load_policies)(org_id))
    if not rule_sets:
        return PolicyOutcome(name=frame.model, strategy=None, rules=())
    prompt = "\n".join(str(m.get("content") or "") for m in messages)
    facts = RequestFacts(
        metadata=frame.metadata.model_dump(), key_id=principal.key_public_id, key_name=principal.key_name,
        key_prefix=principal.key_prefix, org_slug=principal.org_slug, org_tier=principal.org_tier,
        model=frame.model, prompt=prompt, max_tokens=frame.parameters.max_tokens,
    )
    if len(prompt) > _EVALUATE_INLINE_MAX_CHARS:
        return await asyncio.to_thread(_evaluate, rule_sets, facts, frame.model, principal.may_request)
    return _evaluate(rule_sets, facts, frame.model, principal.may_request)


def _evaluate(rule_sets, facts: RequestFacts, requested: str, allowed=lambda name: True) -> PolicyOutcome:
    """The first rule set whose rules match decides — unless what they choose is
    outside the key's allow-list: then that rule set does not apply to this key
    (its rules are a preference; the allow-list is a limit) and the next is tried."""
    for rule_set in rule_sets:
        action, matched = rule_set.evaluate(facts)
        if action is not None:
            name = action.route or action.deployment or requested
            if name != requested and not allowed(name):
                log.info("routing rules %s skipped: their choice is outside the key's allow-list", ", ".join(matched))
                continue
            return PolicyOutcome(name=name, strategy=action.strategy, rules=tuple(matched))
    return PolicyOutcome(name=requested, strategy=None, rules=())


def reset() -> None:
    """Forget the cached compiled routing policies (gateway.runtime.reset)."""
    _cache.clear()
