"""Rate limits (gateway/ratelimits.py) through the consumer against the real mock LLM:
requests and tokens per minute per key, end user and deployment, with accurate
retry_after_ms; and the throttle a budget imposes past its soft threshold (a rate limit
set by gateway/budgeting.py)."""
import asyncio
import time
from decimal import Decimal

import pytest

from billing.models import Budget
from tests.support.consumer import ask, authed

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def deployment(make_deployment):
    return make_deployment("mock-fast")


async def fresh_minute(margin: float = 8.0) -> None:
    """Start a test's burst early in a UTC minute, so it cannot straddle two windows."""
    into = time.time() % 60
    if into > 60 - margin:
        await asyncio.sleep(60 - into + 0.05)


async def test_a_key_over_its_requests_per_minute_gets_429_with_an_accurate_retry_after(issued_key, deployment):
    api_key = issued_key.api_key
    api_key.rpm_limit = 3
    await api_key.asave()
    comm = await authed(issued_key)
    await fresh_minute()
    for i in range(3):
        assert (await ask(comm, f"ok{i}"))[-1]["type"] == "llm_response_end"
    refused = (await ask(comm, "over"))[-1]
    expected = 60_000 - int(time.time() * 1000) % 60_000
    assert (refused["type"], refused["code"], refused["error"], refused["retryable"]) == (
        "error", 429, "rate_limited", True)
    assert "this API key" in refused["message"] and "3 requests per minute" in refused["message"]
    assert abs(refused["retry_after_ms"] - expected) < 1_500
    await comm.disconnect()


async def test_a_key_over_its_tokens_per_minute_gets_429(issued_key, deployment):
    api_key = issued_key.api_key
    api_key.tpm_limit = 40
    await api_key.asave()
    comm = await authed(issued_key)
    await fresh_minute()
    assert (await ask(comm, "big", "hi [[mock tokens=40]]"))[-1]["type"] == "llm_response_end"
    await asyncio.sleep(0.3)  # the completion is counted just after the end frame
    refused = (await ask(comm, "next"))[-1]
    assert refused["code"] == 429 and "40 tokens per minute" in refused["message"]
    await comm.disconnect()


async def test_each_end_user_has_their_own_requests_per_minute(org, issued_key, deployment):
    org.end_user_rpm_limit = 2
    await org.asave()
    comm = await authed(issued_key)
    await fresh_minute()
    for i in range(2):
        assert (await ask(comm, f"a{i}", metadata={"user_id": "alice"}))[-1]["type"] == "llm_response_end"
    refused = (await ask(comm, "a2", metadata={"user_id": "alice"}))[-1]
    assert refused["code"] == 429 and "end user 'alice'" in refused["message"]
    assert (await ask(comm, "b0", metadata={"user_id": "bob"}))[-1]["type"] == "llm_response_end"
    assert (await ask(comm, "anon"))[-1]["type"] == "llm_response_end"  # no user id: no per-user limit
    await comm.disconnect()


async def test_a_deployment_named_directly_is_held_to_its_rate(issued_key, make_deployment):
    await asyncio.to_thread(make_deployment, "mock-capped", rpm_limit=2)
    comm = await authed(issued_key)
    await fresh_minute()
    for i in range(2):
        assert (await ask(comm, f"d{i}", model="mock-capped"))[-1]["type"] == "llm_response_end"
    refused = (await ask(comm, "d2", model="mock-capped"))[-1]
    assert refused["code"] == 429 and "deployment 'mock-capped'" in refused["message"]
    await comm.disconnect()


async def test_past_the_soft_threshold_the_budget_throttles_its_scope(org, issued_key, deployment):
    # Each request reserves ~$0.00107 of a $0.01 budget; 50% is crossed on the fifth.
    await Budget.objects.acreate(org=org, name="throttled", window="month", limit_usd=Decimal("0.01"),
                                 soft_threshold_percent=50, throttle_rpm=1)
    comm = await authed(issued_key)
    await fresh_minute()
    outcomes = []
    for i in range(7):
        last = (await ask(comm, f"t{i}", "go [[mock tokens=100]]", parameters={"max_tokens": 100}))[-1]
        outcomes.append(last.get("code", 200))
    assert outcomes[:4] == [200] * 4  # under the soft threshold: no throttle
    assert 429 in outcomes[4:] and 402 not in outcomes  # slowed down before the hard wall
    first_throttled = outcomes.index(429)
    assert outcomes[first_throttled - 1] == 200  # the one request allowed that minute
    await comm.disconnect()
