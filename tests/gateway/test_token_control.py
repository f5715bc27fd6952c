"""Token control through the consumer against the real mock LLM: rate limits per key,
end user and deployment with accurate retry_after_ms, the throttle past a budget's soft
threshold, max_tokens clamps from every source, and prompt truncation."""
import asyncio
import time
from decimal import Decimal

import pytest
from channels.testing import WebsocketCommunicator

from billing.models import Budget
from openclaw_site.asgi import application
from tests.support.frames import collect, next_frame, send_frame

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def deployment(make_deployment):
    return make_deployment("mock-fast")


async def authed(issued_key):
    comm = WebsocketCommunicator(application, "/websocket")
    connected, _ = await comm.connect()
    assert connected
    await send_frame(comm, {"type": "auth", "token": issued_key.raw})
    assert (await next_frame(comm))["type"] == "auth_ok"
    return comm


async def ask(comm, request_id, prompt="hi [[mock tokens=3]]", model="mock-fast", **extra):
    frame = {"type": "llm_request", "request_id": request_id, "model": model, **extra}
    if prompt is not None:
        frame["prompt"] = prompt
    await send_frame(comm, frame)
    return (await collect(comm))[request_id]


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


async def test_max_tokens_is_clamped_by_key_org_deployment_and_model(org, issued_key, make_deployment):
    # The model's own maximum: litellm's map gives gpt-4-turbo 4096 output tokens.
    await asyncio.to_thread(make_deployment, "mock-gpt4", litellm_model="openai/gpt-4-turbo",
                            max_output_tokens=100_000, context_window=200_000)
    await asyncio.to_thread(make_deployment, "mock-small", max_output_tokens=64)
    comm = await authed(issued_key)
    start = (await ask(comm, "model", model="mock-gpt4", parameters={"max_tokens": 50_000}))[0]
    assert start["max_tokens"] == 4096
    start = (await ask(comm, "deployment", model="mock-small", parameters={"max_tokens": 50_000}))[0]
    assert start["max_tokens"] == 64
    org.max_tokens_per_request = 48
    await org.asave()
    await comm.disconnect()
    comm = await authed(issued_key)  # limits are read when a socket authenticates
    start = (await ask(comm, "org", model="mock-small", parameters={"max_tokens": 50_000}))[0]
    assert start["max_tokens"] == 48
    api_key = issued_key.api_key
    api_key.max_tokens_per_request = 32
    await api_key.asave()
    await comm.disconnect()
    comm = await authed(issued_key)
    frames = await ask(comm, "key", model="mock-small", parameters={"max_tokens": 50_000})
    assert frames[0]["max_tokens"] == 32 and frames[-1]["type"] == "llm_response_end"  # served, not refused
    await comm.disconnect()


def conversation(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "You are terse. SYSTEM-MARK"}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i} " + "lorem ipsum dolor sit amet " * 20})
        messages.append({"role": "assistant", "content": f"answer {i} " + "consectetur adipiscing elit " * 20})
    messages.append({"role": "user", "content": "NEWEST-MARK what now? [[mock tokens=3 tag=truncation]]"})
    return messages


async def test_a_long_conversation_is_truncated_keeping_the_system_prompt_and_newest_turns(
        org, issued_key, deployment, mockllm):
    org.max_input_tokens = 800
    await org.asave()
    comm = await authed(issued_key)
    messages = conversation(10)  # about 2,500 tokens
    frames = (await ask(comm, "long", messages=messages, prompt=None))
    start, end = frames[0], frames[-1]
    assert end["type"] == "llm_response_end", frames
    assert start["truncated"] is True and start["truncated_tokens"] > 1_000
    assert start["prompt_tokens"] <= 800
    sent = (await asyncio.to_thread(mockllm.requests, "truncation"))[-1]["messages"]
    assert sent[0]["content"].endswith("SYSTEM-MARK")
    assert sent[-1]["content"].startswith("NEWEST-MARK")
    assert "answer 9" in sent[-2]["content"]  # the newest turns survive
    assert all("question 0 " not in m["content"] for m in sent)  # the oldest went first
    await comm.disconnect()


async def test_a_prompt_that_cannot_fit_even_truncated_gets_400_with_the_numbers(org, issued_key, deployment):
    org.max_input_tokens = 100
    await org.asave()
    comm = await authed(issued_key)
    messages = [{"role": "system", "content": "rules " * 300}, {"role": "user", "content": "hi"}]
    error = (await ask(comm, "nofit", messages=messages, prompt=None))[-1]
    assert (error["type"], error["code"]) == ("error", 400)
    assert "even truncated" in error["message"] and "input limit of 100 tokens" in error["message"]
    await comm.disconnect()
