"""Budgets against real gateway processes over real sockets: the hard limit under a
burst of concurrent requests (one process; two sharing Redis and PostgreSQL), a
process killed mid-stream, Redis losing its data mid-run, and every ending settled."""
import asyncio
import json
import os
import signal
import time
from decimal import Decimal

import pytest
import websockets

from tests.support.frames import authed_socket, collect, next_frame, send_frame
from tests.support.services import require
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

LEASE_SECONDS = "3"  # a killed process's reservation expires quickly in these tests


@pytest.fixture(scope="module")
def budget_stack(mockllm, tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("budgets"), mock_api_base=mockllm.api_base, name="budgets").prepare()
    stack.start_gateway(OPENCLAW_MAX_IN_FLIGHT="50", OPENCLAW_BUDGET_LEASE_SECONDS=LEASE_SECONDS)
    yield stack
    stack.stop()


def set_budget(stack: Stack, *, limit_usd: str, name: str) -> int:
    """Replace the demo org's budgets with one monthly org budget; returns its id."""
    script = (
        "from decimal import Decimal; from billing.models import Budget; from tenants.models import Organization; "
        "org = Organization.objects.get(slug='demo'); Budget.objects.filter(org=org).delete(); "
        f"print(Budget.objects.create(org=org, name={name!r}, window='month', limit_usd=Decimal({limit_usd!r})).pk)"
    )
    return int(stack.manage("shell", "-c", script).strip().splitlines()[-1])


def clear_usage(stack: Stack) -> None:
    stack.manage("shell", "-c", "from billing.models import *; UsageRecord.objects.all().delete(); "
                                "BudgetCounter.objects.all().delete(); BudgetLease.objects.all().delete()")


def ledger_state(stack: Stack, budget_id: int) -> dict:
    """The budget's counters and the open leases, read from the ledger the stack uses."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        rows = stack.query("SELECT spent_nanos, reserved_nanos FROM billing_budgetcounter WHERE budget_id = %s",
                           (budget_id,))
        leases = stack.query("SELECT count(*) FROM billing_budgetlease")[0][0]
        return {"spent_nanos": sum(r[0] for r in rows), "reserved_nanos": sum(r[1] for r in rows),
                "open_leases": leases}
    import redis

    client = redis.from_url(redis_url)
    prefix = f"openclaw:budget:{stack.pg_url.rsplit('/', 1)[1]}"
    spent = reserved = 0
    for key in client.scan_iter(f"{prefix}:c:{budget_id}:*"):
        spent += int(client.hget(key, "sn"))
        reserved += int(client.hget(key, "rn"))
    return {"spent_nanos": spent, "reserved_nanos": reserved, "open_leases": client.zcard(f"{prefix}:leases")}


def usage_total(stack: Stack) -> tuple[Decimal, int]:
    rows = stack.query("SELECT cost_usd FROM billing_usagerecord")
    return sum((Decimal(str(r[0])) for r in rows), Decimal(0)), len(rows)


async def settled_state(stack: Stack, budget_id: int, timeout: float = 10) -> dict:
    """The budget's ledger state once no lease is open (or as it is after `timeout` seconds):
    usage records are written, and their leases settled, just after the end frames."""
    deadline = time.monotonic() + timeout
    while True:
        state = await asyncio.to_thread(ledger_state, stack, budget_id)
        if state["open_leases"] == 0 or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.2)


async def burst(urls: list[str], key: str, *, connections: int, per_connection: int, prompt: str) -> list[dict]:
    """Send every request at once over `connections` sockets spread across `urls`;
    return each request's terminal frame."""
    sockets = [await authed_socket(urls[i % len(urls)], key, max_size=None) for i in range(connections)]
    for c, ws in enumerate(sockets):
        for i in range(per_connection):
            await send_frame(ws, {"type": "llm_request", "request_id": f"b{c}-{i}", "model": "gpt-4-turbo",
                                  "prompt": prompt, "parameters": {"max_tokens": 50}})
    results = await asyncio.gather(*(collect(ws, until=per_connection, timeout=60) for ws in sockets))
    for ws in sockets:
        await ws.close()
    return [frames[-1] for by_request in results for frames in by_request.values()]


async def assert_limit_held(stack: Stack, budget_id: int, limit: Decimal, terminals: list[dict], expected: int):
    served = [f for f in terminals if f["type"] == "llm_response_end"]
    refused = [f for f in terminals if f["type"] == "error"]
    assert len(served) + len(refused) == expected
    assert {f["code"] for f in refused} <= {402}, [f for f in refused if f["code"] != 402][:3]
    rows = await asyncio.to_thread(stack.wait_for_rows, "SELECT 1 FROM billing_usagerecord", count=expected)
    assert len(rows) == expected  # one usage record per request, refused ones included
    total, _ = await asyncio.to_thread(usage_total, stack)
    assert total <= limit, f"spent {total} over the limit {limit}"
    # Nothing left reserved once every request settled.
    deadline = time.monotonic() + 10
    while True:
        state = await asyncio.to_thread(ledger_state, stack, budget_id)
        if (state["reserved_nanos"], state["open_leases"]) == (0, 0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (state["reserved_nanos"], state["open_leases"]) == (0, 0), state
    assert state["spent_nanos"] >= int(total * 10**9)
    return served, refused


# gpt-4-turbo (demo): $10 in / $30 out per million. A request's worst case is about
# (prompt + margin) x $10/M + 50 x $30/M, a little under $0.0018: the limit fits ~20.
LIMIT = Decimal("0.035")
PROMPT = "count to fifty [[mock tokens=50 rate=200]]"


async def test_two_hundred_concurrent_requests_never_pass_the_limit(budget_stack):
    await asyncio.to_thread(clear_usage, budget_stack)
    budget_id = await asyncio.to_thread(set_budget, budget_stack, limit_usd=str(LIMIT), name="race")
    terminals = await burst([budget_stack.url()], budget_stack.api_key, connections=8, per_connection=25,
                            prompt=PROMPT)
    served, refused = await assert_limit_held(budget_stack, budget_id, LIMIT, terminals, 200)
    assert 15 <= len(served) <= 25 and len(refused) >= 175


async def test_two_processes_sharing_redis_never_pass_the_limit(budget_stack):
    require("redis")
    await asyncio.to_thread(clear_usage, budget_stack)
    budget_id = await asyncio.to_thread(set_budget, budget_stack, limit_usd=str(LIMIT), name="race2")
    second = budget_stack.start_gateway(OPENCLAW_MAX_IN_FLIGHT="50", OPENCLAW_BUDGET_LEASE_SECONDS=LEASE_SECONDS)
    try:
        terminals = await burst([budget_stack.url(), budget_stack.url(second)], budget_stack.api_key,
                                connections=8, per_connection=25, prompt=PROMPT)
    finally:
        _stop(budget_stack, second)
    served, refused = await assert_limit_held(budget_stack, budget_id, LIMIT, terminals, 200)
    assert 15 <= len(served) <= 25


def _stop(stack: Stack, port: int, sig=signal.SIGTERM) -> None:
    for name, process in stack.processes:
        if name == f"gateway:{port}":
            process.send_signal(sig)
            process.wait(timeout=30)


async def test_every_ending_settles_to_the_tokens_received(budget_stack):
    await asyncio.to_thread(clear_usage, budget_stack)
    budget_id = await asyncio.to_thread(set_budget, budget_stack, limit_usd="5", name="endings")
    ws = await authed_socket(budget_stack.url(), budget_stack.api_key, max_size=None)
    # Cancelled after a few tokens; cut by the upstream mid-stream; a client that goes away.
    await send_frame(ws, {"type": "llm_request", "request_id": "cancelled", "model": "gpt-4-turbo",
                          "prompt": "a [[mock tokens=400 rate=100]]", "parameters": {"max_tokens": 500}})
    await send_frame(ws, {"type": "llm_request", "request_id": "cut", "model": "gpt-4-turbo",
                          "prompt": "b [[mock tokens=50 rate=100 fault=cut cut_after=7]]"})
    tokens = 0
    while tokens < 5:
        frame = await next_frame(ws)
        tokens += frame["type"] == "llm_token" and frame["request_id"] == "cancelled"
    await send_frame(ws, {"type": "cancel", "request_id": "cancelled"})
    by_request = await collect(ws, until=2, timeout=20)
    assert by_request["cancelled"][-1]["finish_reason"] == "cancelled"
    assert by_request["cut"][-1]["type"] == "error"
    gone = await authed_socket(budget_stack.url(), budget_stack.api_key, max_size=None)
    await send_frame(gone, {"type": "llm_request", "request_id": "gone", "model": "gpt-4-turbo",
                            "prompt": "c [[mock tokens=400 rate=100]]", "parameters": {"max_tokens": 500}})
    tokens = 0
    while tokens < 5:
        tokens += (await next_frame(gone))["type"] == "llm_token"
    await gone.close()
    await ws.close()
    rows = await asyncio.to_thread(
        budget_stack.wait_for_rows,
        "SELECT client_request_id, status, completion_tokens, cost_usd FROM billing_usagerecord", count=3)
    by_id = {r[0]: r for r in rows}
    assert by_id["cancelled"][1] == "cancelled" and by_id["cancelled"][2] >= 5
    assert by_id["cut"][1] == "upstream_error" and by_id["cut"][2] >= 7
    assert by_id["gone"][1] == "client_gone" and by_id["gone"][2] >= 5
    total = sum(Decimal(str(r[3])) for r in rows)
    state = await settled_state(budget_stack, budget_id)
    assert state["reserved_nanos"] == 0 and state["open_leases"] == 0
    # Each cost is rounded up to the nano-dollar when counted.
    assert int(total * 10**9) <= state["spent_nanos"] <= int(total * 10**9) + 3


async def test_a_process_killed_mid_stream_is_settled_from_its_checkpoint(budget_stack):
    await asyncio.to_thread(clear_usage, budget_stack)
    budget_id = await asyncio.to_thread(set_budget, budget_stack, limit_usd="5", name="crash")
    doomed = budget_stack.start_gateway(OPENCLAW_BUDGET_LEASE_SECONDS=LEASE_SECONDS)
    # The survivor's process reaps lost leases.
    survivor = await authed_socket(budget_stack.url(), budget_stack.api_key, max_size=None)
    ws = await authed_socket(budget_stack.url(doomed), budget_stack.api_key, max_size=None)
    await send_frame(ws, {"type": "llm_request", "request_id": "lost", "model": "gpt-4-turbo",
                          "prompt": "long [[mock tokens=2000 rate=20]]", "parameters": {"max_tokens": 2000}})
    received = 0
    while received < 40:  # two seconds of tokens: the lease was extended with a checkpoint meanwhile
        received += (await next_frame(ws, timeout=20))["type"] == "llm_token"
    await asyncio.to_thread(_stop, budget_stack, doomed, signal.SIGKILL)
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    during = await asyncio.to_thread(ledger_state, budget_stack, budget_id)
    assert during["reserved_nanos"] > 0 and during["open_leases"] == 1  # held until the lease expires
    rows = await asyncio.to_thread(
        budget_stack.wait_for_rows,
        "SELECT status, prompt_tokens, completion_tokens, cost_usd FROM billing_usagerecord "
        "WHERE client_request_id = 'lost'", timeout=30)
    assert rows, "the lost request never appeared in usage"
    status, prompt_tokens, completion_tokens, cost = rows[0]
    assert status == "gateway_lost"
    assert 10 <= completion_tokens <= received
    # Billed at the demo prices from the checkpoint: $10 / $30 per million.
    assert Decimal(str(cost)) == (Decimal(10) * prompt_tokens + Decimal(30) * completion_tokens) / 1_000_000
    after = await settled_state(budget_stack, budget_id)
    assert after["reserved_nanos"] == 0 and after["open_leases"] == 0
    assert after["spent_nanos"] == int(Decimal(str(cost)) * 10**9)
    await survivor.close()


async def test_redis_losing_its_data_mid_run_rebuilds_the_counters_without_overspend(budget_stack):
    require("redis")
    import redis

    await asyncio.to_thread(clear_usage, budget_stack)
    budget_id = await asyncio.to_thread(set_budget, budget_stack, limit_usd=str(LIMIT), name="flush")
    client = redis.from_url(os.environ["REDIS_URL"])
    # A first wave spends part of the budget; a long request stays in flight.
    first = await burst([budget_stack.url()], budget_stack.api_key, connections=1, per_connection=8, prompt=PROMPT)
    assert all(f["type"] == "llm_response_end" for f in first)
    holder = await authed_socket(budget_stack.url(), budget_stack.api_key, max_size=None)
    await send_frame(holder, {"type": "llm_request", "request_id": "held", "model": "gpt-4-turbo",
                              "prompt": "slow [[mock tokens=50 rate=5]]", "parameters": {"max_tokens": 50}})
    assert (await next_frame(holder))["type"] == "llm_response_start"
    await asyncio.to_thread(budget_stack.wait_for_rows, "SELECT 1 FROM billing_usagerecord", count=8)
    client.flushdb()  # every counter and lease is gone
    # The second wave must be admitted against counters rebuilt from usage, with
    # the in-flight request's reservation put back by its process.
    second = await burst([budget_stack.url()], budget_stack.api_key, connections=4, per_connection=25,
                         prompt=PROMPT)
    held = (await collect(holder, timeout=30))["held"]
    assert held[-1]["type"] == "llm_response_end"
    await holder.close()
    await assert_limit_held(budget_stack, budget_id, LIMIT, first + second + [held[-1]], 109)
    assert "missing from Redis; putting it back" in budget_stack.log()  # the held lease was re-asserted


async def test_a_filtered_budget_reroutes_at_rate_card_prices_over_real_sockets(budget_stack):
    """"At most so much on the premium model": at its limit, requests go to the economy
    route instead, said in the start frame, priced with the org's rate card, and still
    counted against the org budget."""
    await asyncio.to_thread(clear_usage, budget_stack)
    script = (
        "from decimal import Decimal; from billing.models import Budget, RateCard; "
        "from gateway.models import Deployment, Route, RouteCandidate; "
        "from tenants.models import Organization; org = Organization.objects.get(slug='demo'); "
        "Budget.objects.filter(org=org).delete(); RateCard.objects.filter(org=org).delete(); "
        "premium, _ = Route.objects.get_or_create(org=org, alias='premium'); "
        "economy, _ = Route.objects.get_or_create(org=org, alias='economy'); "
        "RouteCandidate.objects.get_or_create(route=premium, deployment=Deployment.objects.get(name='claude-3-opus')); "
        "RouteCandidate.objects.get_or_create(route=economy, deployment=Deployment.objects.get(name='gpt-4-turbo')); "
        "Budget.objects.create(org=org, name='premium cap', window='month', limit_usd=Decimal('0.000001'), "
        "route=premium, hard_action='fallback', fallback_route=economy); "
        "b = Budget.objects.create(org=org, name='org monthly', window='month', limit_usd=Decimal('5')); "
        "RateCard.objects.create(org=org, multiplier=Decimal('0.5')); print(b.pk)"
    )
    org_budget = int((await asyncio.to_thread(budget_stack.manage, "shell", "-c", script)).strip().splitlines()[-1])
    await asyncio.sleep(1.1)  # budgets, routes and prices are cached for a second
    ws = await authed_socket(budget_stack.url(), budget_stack.api_key, max_size=None)
    await send_frame(ws, {"type": "llm_request", "request_id": "p", "model": "premium",
                          "prompt": "summarise [[mock tokens=10]]", "parameters": {"max_tokens": 20}})
    frames = (await collect(ws))["p"]
    await ws.close()
    start, end = frames[0], frames[-1]
    assert end["type"] == "llm_response_end", frames
    assert start["route"]["deployment"] == "gpt-4-turbo"
    assert start["route"]["budget_fallback"] == [{"budget": "premium cap", "from": "premium", "to": "economy"}]
    # gpt-4-turbo's $10 / $30 per million at the org's 0.5 rate card: $5 / $15.
    usage = end["usage"]
    expected = (Decimal(5) * usage["prompt_tokens"] + Decimal(15) * usage["completion_tokens"]) / 1_000_000
    assert end["cost_usd"] == format(expected.normalize(), "f")
    assert usage["completion_tokens"] == 10
    rows = await asyncio.to_thread(
        budget_stack.wait_for_rows,
        "SELECT input_price_per_mtok, output_price_per_mtok, cost_usd FROM billing_usagerecord "
        "WHERE client_request_id = 'p'")
    assert (Decimal(str(rows[0][0])), Decimal(str(rows[0][1]))) == (Decimal(5), Decimal(15))
    state = await settled_state(budget_stack, org_budget)
    assert state["spent_nanos"] == int(expected * 10**9) and state["reserved_nanos"] == 0
