"""Deployment health (gateway/health.py): the circuit breaker opens, cools down and
recovers through one probe at a time; a 429 opens it for its Retry-After."""
from gateway.health import COOLDOWN_SECONDS, FAILURE_THRESHOLD, HealthRegistry


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


def test_a_probe_that_says_nothing_about_the_deployment_lets_the_next_request_probe():
    now = [1000.0]
    registry = HealthRegistry(clock=lambda: now[0])
    for _ in range(FAILURE_THRESHOLD):
        registry.record_failure(3)
    now[0] += COOLDOWN_SECONDS + 0.1
    probe = registry.begin_attempt(3)
    other = registry.begin_attempt(3)  # tried last while open: not the probe
    assert not registry.is_available(3)
    registry.release_probe(3, other)
    assert not registry.is_available(3)  # only the probe's own ending releases it
    registry.release_probe(3, probe)  # e.g. the provider refused its content
    assert registry.is_available(3)
    registry.record_first_token(3, 50)  # the next probe got a first token: closed
    assert registry.is_available(3) and registry.ttft_ms(3) == 50
