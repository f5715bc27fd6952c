"""Turning the name a client sent into deployments to try (gateway/routing.py), through
`resolve_model_cached` as the request path calls it (gateway/pipeline.py): resolution
order, org and platform names, a route's requirements, and a key's allow-list.

A key's allow-list holds for the deployment finally served, whatever chose it: the name
sent, a route's candidates, a routing rule's choice and a budget's fallback route (the
last tests, through the consumer against the real mock LLM). A key allowed a route may
be served by that route's deployments; nothing else outside its list may serve it.
"""
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from billing.models import Budget
from catalog.models import RoutingPolicy
from gateway import routing
from gateway.policies import apply_policies
from gateway.protocol import ErrorCode, GatewayError, LlmRequestFrame
from gateway.routing import resolve_model_cached
from tenants.access import authenticate_api_key
from tenants.services import api_key_create
from tests.support.consumer import authed, usage_of
from tests.support.catalog import make_route  # noqa: F401  (fixture)
from tests.support.frames import collect, send_frame

consumer = pytest.mark.django_db(transaction=True)


def principal_for(org, **kwargs):
    return authenticate_api_key(api_key_create(org=org, name="k", **kwargs).raw)


async def resolve(principal, name, **kwargs):
    """The name resolved as the request path resolves it (gateway/pipeline.py awaits
    `resolve_model_cached`): cached per org and name, the database read off the loop."""
    return await resolve_model_cached(principal, name, request_id="r", **kwargs)


async def in_thread(function, *args, **kwargs):
    """Set-up that writes to the database, run off the event loop."""
    return await sync_to_async(function)(*args, **kwargs)


def configuration_changed():
    """Forget resolved names. A saved change is seen within the cache's freshness
    (tests/gateway/test_freshness.py); here each step looks at the order alone."""
    routing._resolution_cache.clear()


# --- resolution ---------------------------------------------------------------------

@consumer
async def test_names_resolve_org_route_then_org_deployment_then_platform_route_then_platform_deployment(
        org, make_deployment, make_route):
    platform_dep = await in_thread(make_deployment, "shared")
    p = await in_thread(principal_for, org)
    assert (await resolve(p, "shared")).strategy == "direct"
    await in_thread(lambda: make_route("shared", "fallback", [make_deployment("platform-a")]))
    configuration_changed()
    assert (await resolve(p, "shared")).route == "shared"
    org_dep = await in_thread(make_deployment, "shared", org=org)
    configuration_changed()
    decision = await resolve(p, "shared")
    assert decision.strategy == "direct" and decision.target.deployment_id == org_dep.pk
    await in_thread(make_route, "shared", "cost", [platform_dep], org=org)
    configuration_changed()
    decision = await resolve(p, "shared")
    assert decision.route == "shared" and decision.strategy == "cost"


@consumer
async def test_a_route_filters_candidates_by_its_requirements(org, make_deployment, make_route):
    def configure():
        legal = make_deployment("legal-model", tags=["legal", "long"], context_window=200_000, region="eu")
        general = make_deployment("general-model", tags=["general"], context_window=8_000, region="us")
        make_route("legal", "capability", [legal, general], required_tags=["legal"])

    await in_thread(configure)
    decision = await resolve(await in_thread(principal_for, org), "legal")
    assert [t.name for t in decision.candidates] == ["legal-model"]
    assert "required capabilities" in decision.reason


@consumer
async def test_a_route_whose_candidates_are_all_disabled_is_503(org, make_deployment, make_route):
    await in_thread(lambda: make_route("empty", "cost", [make_deployment("off", enabled=False)]))
    with pytest.raises(GatewayError) as caught:
        await resolve(await in_thread(principal_for, org), "empty")
    assert caught.value.code == 503


@consumer
async def test_a_platform_deployment_serves_every_org(org, make_deployment):
    await in_thread(make_deployment, "shared-model")
    decision = await resolve(await in_thread(principal_for, org), "shared-model")
    assert decision.target.name == "shared-model"
    assert decision.explain()["provider"] == "mock"


@consumer
async def test_an_org_deployment_shadows_the_platform_one(org, make_deployment):
    await in_thread(make_deployment, "gpt-x", input_price="1")
    await in_thread(make_deployment, "gpt-x", org=org, input_price="2")
    decision = await resolve(await in_thread(principal_for, org), "gpt-x")
    assert str(decision.target.prices.input_per_mtok) == "2.000000"
    assert "org deployment" in decision.reason


@consumer
async def test_another_orgs_deployment_is_not_found(org, other_org, make_deployment):
    await in_thread(make_deployment, "private-model", org=other_org)
    with pytest.raises(GatewayError) as caught:
        await resolve(await in_thread(principal_for, org), "private-model")
    assert caught.value.code == ErrorCode.NOT_FOUND


@consumer
async def test_the_allow_list_applies_to_the_name_sent(org, make_deployment):
    await in_thread(make_deployment, "allowed")
    await in_thread(make_deployment, "other")
    principal = await in_thread(principal_for, org, allowed_models=["allowed"])
    assert await resolve(principal, "allowed")
    with pytest.raises(GatewayError) as caught:
        await resolve(principal, "other")
    assert caught.value.code == ErrorCode.FORBIDDEN


@consumer
async def test_a_disabled_deployment_is_unavailable(org, make_deployment):
    await in_thread(make_deployment, "off", enabled=False)
    with pytest.raises(GatewayError) as caught:
        await resolve(await in_thread(principal_for, org), "off")
    assert caught.value.code == ErrorCode.NO_HEALTHY_DEPLOYMENT and caught.value.retryable


# --- the allow-list, whatever chose the deployment ---------------------------------------

RULES = [
    {"name": "urgent goes premium", "when": {"eq": ["metadata.priority", "high"]},
     "then": {"deployment": "premium"}},
    {"name": "legal questions", "when": {"keywords": ["request.prompt", ["legal"]]},
     "then": {"route": "legal_expert"}},
]


@pytest.fixture
def routed(org, make_deployment, make_route):
    make_deployment("general")
    make_deployment("premium", input_price="30", output_price="60")
    make_route("legal_expert", "fallback", [make_deployment("legal-model")])
    return RoutingPolicy.objects.create(org=org, rules=RULES)


def key(org, allowed):
    from tenants.services import api_key_create

    return api_key_create(org=org, name="limited", allowed_models=allowed)


async def ask(comm, rid, model, prompt="hello", **extra):
    await send_frame(comm, {"type": "llm_request", "request_id": rid, "model": model,
                            "prompt": f"{prompt} [[mock tokens=2 tag=allow-{rid}]]", **extra})
    return (await collect(comm))[rid]


@consumer
async def test_a_rule_cannot_serve_a_deployment_outside_the_keys_allow_list(org, routed, mockllm):
    limited = await sync_to_async(key)(org, ["general"])
    comm = await authed(limited)
    frames = await ask(comm, "urgent", "general", metadata={"priority": "high"})
    start = frames[0]
    assert start["type"] == "llm_response_start" and frames[-1]["type"] == "llm_response_end", frames
    assert start["route"]["deployment"] == "general" and start["route"]["rule"] is None, start["route"]
    await comm.disconnect()
    assert [e["model"] for e in mockllm.events("allow-urgent")] == ["general"]
    assert (await usage_of("urgent")).deployment_name == "general"


@consumer
async def test_a_rule_choosing_a_route_the_key_may_use_applies_with_all_its_candidates(org, routed):
    allowed = await sync_to_async(key)(org, ["general", "legal_expert"])
    comm = await authed(allowed)
    start = (await ask(comm, "legal", "general", "is this legal"))[0]
    # legal-model is not on the list itself: the route that is on it serves through it.
    assert start["route"]["route"] == "legal_expert" and start["route"]["deployment"] == "legal-model"
    assert start["route"]["rule"] == "legal questions"
    # The same rule for a key without the route: the name sent is served.
    await comm.disconnect()
    limited = await sync_to_async(key)(org, ["general"])
    comm = await authed(limited)
    start = (await ask(comm, "legal2", "general", "is this legal"))[0]
    assert start["route"]["deployment"] == "general" and start["route"]["route"] is None
    # A deployment named directly still needs to be on the list.
    [error] = await ask(comm, "direct", "legal-model")
    assert (error["code"], error["error"]) == (403, "forbidden")
    await comm.disconnect()


@consumer
async def test_a_key_without_an_allow_list_follows_every_rule(issued_key, routed):
    comm = await authed(issued_key)
    start = (await ask(comm, "any", "general", metadata={"priority": "high"}))[0]
    assert start["route"]["deployment"] == "premium" and start["route"]["rule"] == "urgent goes premium"
    await comm.disconnect()


@consumer
async def test_resolution_never_returns_a_rules_choice_outside_the_allow_list(org, routed):
    """The guarantee at its source, whatever computed the policy outcome."""
    from gateway.policies import PolicyOutcome

    limited = await sync_to_async(key)(org, ["general"])
    principal = await sync_to_async(authenticate_api_key)(limited.raw)
    outcome = PolicyOutcome(name="premium", strategy="cost", rules=("sneaky",))
    decision = await resolve_model_cached(principal, "general", request_id="r", policy=outcome)
    assert [t.name for t in decision.candidates] == ["general"] and decision.rules == []
    frame = LlmRequestFrame.model_validate({"type": "llm_request", "model": "general", "prompt": "x",
                                            "metadata": {"priority": "high"}})
    policy = await apply_policies(principal, frame, frame.chat_messages())
    assert policy.name == "general" and policy.rules == ()


@pytest.fixture
def capped_premium(org, make_deployment, make_route):
    """An org route 'premium' whose budget is used up, with a fallback route 'cheap'."""
    premium = make_route("premium", "fallback", [make_deployment("mock-premium", input_price="30")], org=org)
    cheap = make_route("cheap", "fallback", [make_deployment("mock-cheap", input_price="0.5")], org=org)
    Budget.objects.create(org=org, name="premium cap", window="month", limit_usd=Decimal("0.000001"),
                          route=premium, hard_action="fallback", fallback_route=cheap)


@consumer
async def test_a_budget_fallback_route_outside_the_allow_list_is_a_402_not_a_way_around_it(
        org, capped_premium, mockllm):
    limited = await sync_to_async(key)(org, ["premium"])
    comm = await authed(limited)
    [error] = await ask(comm, "capped", "premium")
    assert (error["code"], error["error"], error["retryable"]) == (402, "budget_exhausted", False), error
    assert "premium cap" in error["message"] and "allowed" in error["message"]
    await comm.disconnect()
    assert mockllm.events("allow-capped") == []
    assert (await usage_of("capped")).status == "rejected"
    # Allowed the fallback route too, the key is served through it.
    both = await sync_to_async(key)(org, ["premium", "cheap"])
    comm = await authed(both)
    start = (await ask(comm, "fell-back", "premium"))[0]
    assert start["route"]["deployment"] == "mock-cheap" and start["route"]["budget_fallback"][0]["to"] == "cheap"
    await comm.disconnect()
