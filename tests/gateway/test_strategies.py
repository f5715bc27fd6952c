"""Route strategies (gateway/strategies.py): how each orders a route's candidates on
live health, and how a deployment at its capacity cap is skipped."""
import random
from collections import Counter

from gateway.health import FAILURE_THRESHOLD, HealthRegistry
from gateway.strategies import Candidate, order_candidates
from tests.support.catalog import target


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
