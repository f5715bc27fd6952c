"""The article's six routing strategies (its Table 1), end to end.

A real gateway process, real sockets, real HTTP through litellm to the mock LLM. Each test
defines its own mock deployments and routes in the stack's database (as an admin's save
would), sends many requests, and checks three things: what the gateway said it did
(`llm_response_start.route`), what the mock LLM actually received (its request records,
by tag), and what the usage record keeps for later.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from tests.support.frames import authed_socket, collect, next_frame, send_frame, text_of
from tests.support.routes import configure

pytestmark = pytest.mark.e2e

FAST = "rate=0 ttft_ms=0"


@pytest.fixture
async def ws(stack):
    socket = await authed_socket(stack.url(), stack.api_key, max_size=2**22)
    yield socket
    await socket.close()


@pytest.fixture
def clear_policy(stack):
    """Rules apply to every request of the demo org: never leave them to other tests."""
    yield
    configure(stack, policy=[])


async def settle():
    """Configuration edits reach the gateway when it next polls the version row (4 times a second)."""
    await asyncio.sleep(0.8)


async def ask(ws, model: str, count: int, *, tag: str, prompt: str = "Hello", metadata: dict | None = None,
              in_flight: int = 8) -> list[dict]:
    """Send `count` requests (at most `in_flight` at a time); every one must be answered in full.
    Returns the start frames, in request order."""
    starts = []
    for first in range(0, count, in_flight):
        ids = [f"{tag}-{i}" for i in range(first, min(count, first + in_flight))]
        for rid in ids:
            frame = {"type": "llm_request", "request_id": rid, "model": model,
                     "prompt": f"{prompt} [[mock tokens=3 tag={tag}]]"}
            if metadata is not None:
                frame["metadata"] = metadata
            await send_frame(ws, frame)
        frames = await collect(ws, until=len(ids), timeout=30)
        for rid in ids:
            assert frames[rid][0]["type"] == "llm_response_start", frames[rid]
            assert frames[rid][-1]["type"] == "llm_response_end", frames[rid]
            assert frames[rid][-1]["finish_reason"] == "stop" and text_of(frames[rid]), frames[rid]
            starts.append(frames[rid][0])
    return starts


def served_by(starts: list[dict]) -> Counter:
    return Counter(start["route"]["deployment"] for start in starts)


def upstream_calls(mockllm, tag: str) -> Counter:
    """Which model the mock LLM was actually asked for, per request it received with this tag."""
    return Counter(record["model"] for record in mockllm.events(tag))


def recorded_route(stack, request_id: str) -> dict:
    rows = stack.wait_for_rows("SELECT route FROM billing_usagerecord WHERE client_request_id = %s", (request_id,))
    assert rows, f"no usage record for {request_id}"
    value = rows[0][0]
    return value if isinstance(value, dict) else json.loads(value)


async def test_cost_picks_the_cheapest_candidate_that_meets_the_quality_bar(stack, ws, mockllm):
    configure(stack, deployments=[
        {"name": "cost-premium", "price": "30", "tags": ["quality"], "directives": FAST},
        {"name": "cost-standard", "price": "10", "tags": ["quality"], "directives": FAST},
        {"name": "cost-tiny", "price": "0.5", "directives": FAST},  # cheapest, but below the bar
    ], routes=[{"alias": "faq_answers", "strategy": "cost", "required_tags": ["quality"],
                "candidates": ["cost-premium", "cost-tiny", "cost-standard"]}])
    await settle()
    starts = await ask(ws, "faq_answers", 12, tag="cost")
    assert served_by(starts) == {"cost-standard": 12}
    route = starts[0]["route"]
    assert route["strategy"] == "cost" and route["route"] == "faq_answers" and route["provider"] == "mock"
    assert route["reason"] == "cheapest healthy of 2" and route["attempts"] == []
    assert upstream_calls(mockllm, "cost") == {"cost-standard": 12}
    assert recorded_route(stack, "cost-0")["reason"] == "cheapest healthy of 2"


async def test_latency_goes_to_the_fastest_once_measured_and_still_explores(stack, ws, mockllm):
    configure(stack, deployments=[
        {"name": "lat-slow", "directives": "rate=0 ttft_ms=250"},
        {"name": "lat-medium", "directives": "rate=0 ttft_ms=100"},
        {"name": "lat-fast", "directives": "rate=0 ttft_ms=5"},
    ], routes=[{"alias": "realtime_chat", "strategy": "latency",
                "candidates": ["lat-slow", "lat-medium", "lat-fast"]}])  # the fastest listed last
    await settle()
    warm_up = await ask(ws, "realtime_chat", 6, tag="lat-warm", in_flight=1)
    # Unmeasured candidates are tried first, so each gets measured.
    assert set(served_by(warm_up)) == {"lat-slow", "lat-medium", "lat-fast"}
    starts = await ask(ws, "realtime_chat", 60, tag="lat", in_flight=4)
    counts = served_by(starts)
    # 5 % of requests explore a random other candidate: ~57 of 60 expected on the fastest.
    assert counts["lat-fast"] >= 48, counts
    fastest = [s["route"] for s in starts if s["route"]["deployment"] == "lat-fast"]
    assert all(r["strategy"] == "latency" and r["reason"].startswith("lowest time to first token") for r in fastest
               if not r["reason"].startswith("exploring")), fastest
    assert upstream_calls(mockllm, "lat") == counts
    assert recorded_route(stack, "lat-59")["strategy"] == "latency"


async def test_capability_sends_an_inferred_task_to_the_specialised_deployment(stack, ws, mockllm, clear_policy):
    configure(stack, deployments=[
        {"name": "cap-general", "tags": ["general"], "directives": FAST},
        {"name": "cap-coder", "tags": ["code"], "directives": FAST},
        {"name": "cap-legal", "tags": ["legal"], "directives": FAST},
    ], routes=[
        {"alias": "assistant", "strategy": "fallback", "candidates": ["cap-general"]},
        {"alias": "code_expert", "strategy": "capability", "required_tags": ["code"],
         "candidates": ["cap-general", "cap-legal", "cap-coder"]},
    ], policy=[
        {"name": "code tasks", "when": {"keywords": ["request.prompt", ["python", "function", "compile"]]},
         "then": {"route": "code_expert"}},
    ])
    await settle()
    code = await ask(ws, "assistant", 5, tag="cap-code", prompt="Write a Python function that sorts a list")
    chat = await ask(ws, "assistant", 5, tag="cap-chat", prompt="What is the weather like in spring?")
    assert served_by(code) == {"cap-coder": 5} and served_by(chat) == {"cap-general": 5}
    route = code[0]["route"]
    assert route["route"] == "code_expert" and route["strategy"] == "capability"
    assert route["rule"] == "code tasks", route
    assert route["reason"] == "first of 1 with the required capabilities"
    assert chat[0]["route"]["rule"] is None and chat[0]["route"]["route"] == "assistant"
    assert code[0]["model"] == "assistant"  # the name the client sent
    # Named directly, the route still serves only candidates with the capability.
    direct = await ask(ws, "code_expert", 5, tag="cap-direct")
    assert served_by(direct) == {"cap-coder": 5}
    assert upstream_calls(mockllm, "cap-code") == {"cap-coder": 5}
    assert upstream_calls(mockllm, "cap-chat") == {"cap-general": 5}
    recorded = recorded_route(stack, "cap-code-0")
    assert recorded["route"] == "code_expert" and recorded["rule"] == route["rule"]


async def test_fallback_reroutes_around_failing_providers_without_the_client_noticing(stack, ws, mockllm):
    configure(stack, deployments=[
        {"name": "fb-primary", "directives": "fault=503 " + FAST},
        {"name": "fb-secondary", "directives": "fault=500 " + FAST},
        {"name": "fb-healthy", "directives": FAST},
    ], routes=[{"alias": "always_on", "strategy": "fallback",
                "candidates": ["fb-primary", "fb-secondary", "fb-healthy"]}])
    await settle()
    first = await ask(ws, "always_on", 1, tag="fb-first")
    route = first[0]["route"]
    assert route["deployment"] == "fb-healthy" and route["strategy"] == "fallback"
    assert [a["deployment"] for a in route["attempts"]] == ["fb-primary", "fb-secondary"], route
    assert "503" in str(route["attempts"][0]) and "500" in str(route["attempts"][1]), route
    assert route["reason"].startswith("fallback after") and "fb-secondary" in route["reason"], route
    assert upstream_calls(mockllm, "fb-first") == {"fb-primary": 1, "fb-secondary": 1, "fb-healthy": 1}
    # Repeated failures open the failing deployments' breakers: later requests skip them.
    later = await ask(ws, "always_on", 20, tag="fb-later", in_flight=1)
    assert served_by(later) == {"fb-healthy": 20}
    assert later[-1]["route"]["attempts"] == [], later[-1]["route"]
    calls = upstream_calls(mockllm, "fb-later")
    assert calls["fb-healthy"] == 20 and calls["fb-primary"] < 10, calls
    assert recorded_route(stack, "fb-first-0")["attempts"] == route["attempts"]


async def test_load_balancing_follows_the_weights_and_spreads_by_load(stack, ws, mockllm):
    configure(stack, deployments=[
        {"name": "lb-big", "directives": FAST}, {"name": "lb-small", "directives": FAST},
        {"name": "lb-x", "directives": FAST}, {"name": "lb-y", "directives": FAST},
        {"name": "lb-z", "directives": FAST},
    ], routes=[
        {"alias": "bursty", "strategy": "weighted",
         "candidates": [{"name": "lb-big", "weight": 3}, {"name": "lb-small", "weight": 1}]},
        {"alias": "spread", "strategy": "least_busy", "candidates": ["lb-x", "lb-y", "lb-z"]},
    ])
    await settle()
    starts = await ask(ws, "bursty", 200, tag="lb-weighted")
    counts = served_by(starts)
    # 3:1 over 200 requests: 150 expected, standard deviation ~6.1; the bounds are ~5 of them.
    assert 120 <= counts["lb-big"] <= 180 and counts["lb-big"] + counts["lb-small"] == 200, counts
    assert {s["route"]["reason"] for s in starts} == {"weighted pick of 2"}
    assert upstream_calls(mockllm, "lb-weighted") == counts

    # Least busy: three long streams in flight at once land on three different deployments.
    held = []
    for i in range(3):
        await send_frame(ws, {"type": "llm_request", "request_id": f"hold-{i}", "model": "spread",
                              "prompt": "long [[mock tokens=400 rate=40 ttft_ms=0 tag=lb-hold]]"})
        start = await next_frame(ws)
        while start["request_id"] != f"hold-{i}":  # tokens of the streams already held
            start = await next_frame(ws)
        assert start["type"] == "llm_response_start", start
        assert start["route"]["reason"] == "fewest in flight (0) of 3", start["route"]
        held.append(start["route"]["deployment"])
    assert sorted(held) == ["lb-x", "lb-y", "lb-z"], held
    assert upstream_calls(mockllm, "lb-hold") == {"lb-x": 1, "lb-y": 1, "lb-z": 1}
    for i in range(3):
        await send_frame(ws, {"type": "cancel", "request_id": f"hold-{i}"})
    ended = 0
    while ended < 3:  # drain the held streams' tokens up to their cancelled ends
        frame = await next_frame(ws)
        ended += frame["type"] == "llm_response_end"


async def test_user_and_context_rules_give_enterprise_users_the_premium_route(stack, ws, mockllm, clear_policy):
    configure(stack, deployments=[
        {"name": "ctx-standard", "directives": FAST}, {"name": "ctx-premium", "directives": FAST},
    ], routes=[
        {"alias": "support_bot", "strategy": "fallback", "candidates": ["ctx-standard"]},
        {"alias": "support_bot_premium", "strategy": "fallback", "candidates": ["ctx-premium"]},
    ], policy=[
        {"name": "enterprise users get premium",
         "when": {"all": [{"eq": ["request.model", "support_bot"]},
                          {"in": ["metadata.user_tier", ["enterprise", "staff"]]}]},
         "then": {"route": "support_bot_premium"}},
        {"name": "urgent requests on this key", "when": {"all": [{"eq": ["key.name", "demo key"]},
                                                                {"eq": ["metadata.priority", "urgent"]}]},
         "then": {"deployment": "ctx-premium"}},
    ])
    await settle()
    enterprise = await ask(ws, "support_bot", 4, tag="ctx-ent",
                           metadata={"user_id": "alice", "user_tier": "enterprise"})
    free = await ask(ws, "support_bot", 4, tag="ctx-free", metadata={"user_id": "bob", "user_tier": "free"})
    urgent = await ask(ws, "gpt-4-turbo", 2, tag="ctx-urgent", metadata={"priority": "urgent"})
    assert served_by(enterprise) == {"ctx-premium": 4} and served_by(free) == {"ctx-standard": 4}
    assert served_by(urgent) == {"ctx-premium": 2}
    assert enterprise[0]["route"]["rule"] == "enterprise users get premium"
    assert urgent[0]["route"]["rule"] == "urgent requests on this key"
    assert enterprise[0]["route"]["route"] == "support_bot_premium" and free[0]["route"]["rule"] is None
    assert upstream_calls(mockllm, "ctx-ent") == {"ctx-premium": 4}
    assert upstream_calls(mockllm, "ctx-free") == {"ctx-standard": 4}
    rows = stack.wait_for_rows("SELECT end_user FROM billing_usagerecord WHERE client_request_id = %s",
                               ("ctx-ent-0",))
    assert rows and rows[0][0] == "alice"
    assert recorded_route(stack, "ctx-ent-0")["route"] == "support_bot_premium"
