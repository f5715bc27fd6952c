"""Routes: resolution order, strategies, health, and fallback against the real mock LLM."""
import random
from collections import Counter
from decimal import Decimal

import pytest

from gateway.health import COOLDOWN_SECONDS, FAILURE_THRESHOLD, HealthRegistry
from catalog.models import Route, RouteCandidate
from catalog.targets import Target
from gateway.routing import resolve_model
from gateway.strategies import Candidate, order_candidates
from tenants.access import authenticate_api_key
from tests.gateway.test_consumer import authed, usage_of
from tests.support.frames import collect, send_frame, text_of


@pytest.fixture
def make_route(db):
    def make(alias, strategy, deployments, *, org=None, **fields):
        route = Route.objects.create(alias=alias, strategy=strategy, org=org, **fields)
        for position, item in enumerate(deployments):
            deployment, weight = item if isinstance(item, tuple) else (item, 1)
            RouteCandidate.objects.create(route=route, deployment=deployment, weight=weight, position=position)
        return route

    return make


def principal(org):
    from tenants.services import api_key_create

    return authenticate_api_key(api_key_create(org=org, name="k").raw)


# --- resolution ---------------------------------------------------------------------

@pytest.mark.django_db
def test_names_resolve_org_route_then_org_deployment_then_platform_route_then_platform_deployment(
        org, make_deployment, make_route):
    platform_dep = make_deployment("shared")
    p = principal(org)
    assert resolve_model(p, "shared", request_id="r").strategy == "direct"
    make_route("shared", "fallback", [make_deployment("platform-a")])
    assert resolve_model(p, "shared", request_id="r").route == "shared"
    org_dep = make_deployment("shared", org=org)
    decision = resolve_model(p, "shared", request_id="r")
    assert decision.strategy == "direct" and decision.target.deployment_id == org_dep.pk
    make_route("shared", "cost", [platform_dep], org=org)
    decision = resolve_model(p, "shared", request_id="r")
    assert decision.route == "shared" and decision.strategy == "cost"


@pytest.mark.django_db
def test_a_route_filters_candidates_by_its_requirements(org, make_deployment, make_route):
    legal = make_deployment("legal-model", tags=["legal", "long"], context_window=200_000, region="eu")
    general = make_deployment("general-model", tags=["general"], context_window=8_000, region="us")
    make_route("legal", "capability", [legal, general], required_tags=["legal"])
    decision = resolve_model(principal(org), "legal", request_id="r")
    assert [t.name for t in decision.candidates] == ["legal-model"]
    assert "required capabilities" in decision.reason


@pytest.mark.django_db
def test_a_route_whose_candidates_are_all_disabled_is_503(org, make_deployment, make_route):
    from gateway.protocol import GatewayError

    make_route("empty", "cost", [make_deployment("off", enabled=False)])
    with pytest.raises(GatewayError) as caught:
        resolve_model(principal(org), "empty", request_id="r")
    assert caught.value.code == 503


def test_a_candidate_of_another_org_is_refused(db, org, other_org, make_deployment):
    from django.core.exceptions import ValidationError

    route = Route.objects.create(alias="mine", org=org)
    candidate = RouteCandidate(route=route, deployment=make_deployment("theirs", org=other_org))
    with pytest.raises(ValidationError, match="own org"):
        candidate.full_clean()


# --- strategies (pure) ----------------------------------------------------------------

def target(i, *, price="1", rpm=None, tpm=None, concurrency=None):
    return Target(deployment_id=i, name=f"d{i}", provider="mock", litellm_model="openai/x", api_base="",
                  api_key=None, extra_params={}, prices=_prices(price), context_window=8000,
                  max_output_tokens=1000, tags=(), region="", rpm_limit=rpm, tpm_limit=tpm,
                  max_concurrency=concurrency, connect_timeout_s=1, first_token_timeout_s=1,
                  idle_timeout_s=1, total_timeout_s=1)


def _prices(price):
    from catalog.money import Prices

    return Prices(Decimal(price), Decimal(price))


def test_cost_picks_the_cheapest_healthy_candidate():
    candidates = [Candidate(target(1, price="10"), 1, 0), Candidate(target(2, price="0.5"), 1, 1),
                  Candidate(target(3, price="3"), 1, 2)]
    health = HealthRegistry()
    ordered, reason = order_candidates("cost", candidates, health=health, rng=random.Random(1))
    assert [c.target.deployment_id for c in ordered] == [2, 3, 1] and reason == "cheapest healthy of 3"
    for _ in range(FAILURE_THRESHOLD):
        health.record_failure(2)
    ordered, _ = order_candidates("cost", candidates, health=health, rng=random.Random(1))
    assert [c.target.deployment_id for c in ordered] == [3, 1, 2]  # open breaker: tried last


def test_weighted_routing_follows_the_weights():
    candidates = [Candidate(target(1), 1, 0), Candidate(target(2), 3, 1)]
    rng = random.Random(42)
    firsts = Counter(order_candidates("weighted", candidates, health=HealthRegistry(), rng=rng)[0][0]
                     .target.deployment_id for _ in range(4000))
    assert 0.70 < firsts[2] / 4000 < 0.80  # expected 0.75


def test_least_busy_picks_the_fewest_in_flight():
    health = HealthRegistry()
    for _ in range(3):
        health.begin_attempt(1)
    health.begin_attempt(2)
    candidates = [Candidate(target(1), 1, 0), Candidate(target(2), 1, 1), Candidate(target(3), 1, 2)]
    ordered, reason = order_candidates("least_busy", candidates, health=health, rng=random.Random(1))
    assert [c.target.deployment_id for c in ordered] == [3, 2, 1] and "fewest in flight (0)" in reason


def test_latency_prefers_the_fastest_but_explores_a_little():
    health = HealthRegistry()
    health.record_success(1, 400)
    health.record_success(2, 90)
    candidates = [Candidate(target(1), 1, 0), Candidate(target(2), 1, 1)]
    rng = random.Random(7)
    firsts = Counter(order_candidates("latency", candidates, health=health, rng=rng)[0][0].target.deployment_id
                     for _ in range(2000))
    assert 0.01 < firsts[1] / 2000 < 0.10  # the slow one still gets the exploration share


def test_a_deployment_at_its_capacity_cap_is_skipped_not_overloaded():
    now = [0.0]
    health = HealthRegistry(clock=lambda: now[0])
    capped = Candidate(target(1, price="0.1", rpm=2, concurrency=1), 1, 0)
    spare = Candidate(target(2, price="9"), 1, 1)

    def first():
        ordered, _ = order_candidates("cost", [capped, spare], health=health, rng=random.Random(1))
        return [c.target.deployment_id for c in ordered]

    assert first() == [1, 2]
    health.begin_attempt(1)
    assert first() == [2]  # one in flight = its concurrency cap
    health.end_attempt(1)
    health.begin_attempt(1)
    health.end_attempt(1)
    assert first() == [2]  # two requests this minute = its rpm cap
    now[0] = 61
    assert first() == [1, 2]


def test_a_token_per_minute_cap_counts_finished_requests():
    health = HealthRegistry(clock=lambda: 0.0)
    capped = Candidate(target(1, tpm=1000), 1, 0)
    health.begin_attempt(1)
    health.end_attempt(1)
    health.record_tokens(1, 999)
    assert order_candidates("fallback", [capped], health=health, rng=random.Random(1))[0]
    health.begin_attempt(1)
    health.end_attempt(1)
    health.record_tokens(1, 1)
    ordered, reason = order_candidates("fallback", [capped], health=health, rng=random.Random(1))
    assert ordered == [] and "capacity" in reason


def test_the_breaker_opens_cools_down_and_recovers_through_a_probe():
    now = [1000.0]
    health = HealthRegistry(clock=lambda: now[0])
    for _ in range(FAILURE_THRESHOLD):
        health.record_failure(5)
    assert not health.is_available(5)
    now[0] += COOLDOWN_SECONDS + 0.1
    assert health.is_available(5)
    health.begin_attempt(5)  # the half-open probe
    assert not health.is_available(5)  # only one probe at a time
    health.record_failure(5)  # probe failed: open again
    assert not health.is_available(5)
    now[0] += COOLDOWN_SECONDS + 0.1
    health.begin_attempt(5)
    health.record_success(5, 100)
    assert health.is_available(5)


def test_a_429_opens_the_breaker_for_its_retry_after():
    now = [0.0]
    health = HealthRegistry(clock=lambda: now[0])
    health.record_failure(9, retry_after_ms=4000)
    assert not health.is_available(9)
    now[0] = 4.1
    assert health.is_available(9)


# --- fallback over the real mock LLM -----------------------------------------------------

pytestmark_consumer = pytest.mark.django_db(transaction=True)  # consumer tests below


@pytest.fixture
def failing_then_healthy(make_deployment, make_route):
    def faulty(name, directives, **fields):
        return make_deployment(name, extra_params={"extra_headers": {"X-Mock-Directives": directives}}, **fields)

    failing = [faulty("errors", "fault=500"), faulty("limited", "fault=429 retry_after=30"),
               faulty("broken", "fault=503"), faulty("hung", "fault=hang", first_token_timeout_ms=300)]
    make_route("resilient", "fallback", [*failing, make_deployment("healthy")], max_attempts=5)


@pytestmark_consumer
async def test_a_failing_deployment_is_skipped_and_the_client_gets_a_complete_answer(issued_key,
                                                                                     failing_then_healthy):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "fb", "model": "resilient",
                            "prompt": "hello [[mock tokens=6]]"})
    frames = (await collect(comm))["fb"]
    start, end = frames[0], frames[-1]
    assert start["type"] == "llm_response_start" and end["type"] == "llm_response_end"
    route = start["route"]
    assert route["deployment"] == "healthy" and route["route"] == "resilient" and route["strategy"] == "fallback"
    assert [(a["deployment"], a["error"]) for a in route["attempts"]] == [
        ("errors", "HTTP 500"), ("limited", "HTTP 429"), ("broken", "HTTP 503"), ("hung", "timeout")]
    assert route["reason"] == "fallback after timeout from hung"
    assert len(text_of(frames).split()) == 6
    # The 429's Retry-After opened that deployment's breaker: the next request skips it.
    await send_frame(comm, {"type": "llm_request", "request_id": "fb2", "model": "resilient",
                            "prompt": "again [[mock tokens=2]]"})
    attempts = (await collect(comm))["fb2"][0]["route"]["attempts"]
    assert "limited" not in [a["deployment"] for a in attempts]
    await comm.disconnect()
    record = await usage_of("fb")
    assert record.deployment_name == "healthy" and len(record.route["attempts"]) == 4


@pytestmark_consumer
async def test_a_cut_mid_stream_ends_with_an_error_and_bills_what_was_received(issued_key, make_deployment,
                                                                                make_route):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_route)("cutting", "fallback", [
        await sync_to_async(make_deployment)("cuts", extra_params={"extra_headers": {"X-Mock-Directives": "fault=cut cut_after=4"}}),
        await sync_to_async(make_deployment)("spare"),
    ])
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "cut", "model": "cutting", "prompt": "x"})
    frames = (await collect(comm))["cut"]
    assert frames[0]["route"]["deployment"] == "cuts"
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == 502 and frames[-1]["retryable"] is False
    assert len([f for f in frames if f["type"] == "llm_token"]) == 4  # never spliced with "spare"
    await comm.disconnect()
    record = await usage_of("cut")
    assert record.status == "upstream_error" and record.completion_tokens >= 4 and record.cost_usd > 0


@pytestmark_consumer
async def test_when_every_candidate_fails_the_client_gets_one_error_naming_the_attempts(issued_key,
                                                                                        make_deployment, make_route):
    from asgiref.sync import sync_to_async

    down = [await sync_to_async(make_deployment)(f"down{i}", extra_params={
        "extra_headers": {"X-Mock-Directives": "fault=500"}}) for i in range(2)]
    await sync_to_async(make_route)("doomed", "fallback", down)
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "all", "model": "doomed", "prompt": "x"})
    frames = (await collect(comm))["all"]
    assert len(frames) == 1 and frames[0]["code"] == 502 and "after 2 attempts" in frames[0]["message"]
    await comm.disconnect()
    record = await usage_of("all")
    assert [a["deployment"] for a in record.route["attempts"]] == ["down0", "down1"]
