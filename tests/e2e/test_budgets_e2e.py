"""Budgets against real gateway processes over real sockets: the hard limit under a
burst of concurrent requests (one process; two sharing Redis and PostgreSQL), a
process killed mid-stream, Redis losing its data mid-run, and every ending settled."""
import asyncio
import json
import os
import re
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
    return int(stack.configure(script).strip().splitlines()[-1])


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
    return each request's terminal frame (no retries)."""
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
    # Used up (402), or busy with reservations in flight past the wait (429
    # budget_busy, retryable): these clients do not retry.
    assert {(f["code"], f["error"]) for f in refused} <= {(402, "budget_exhausted"), (429, "budget_busy")}, refused[:3]
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
        frame = await next_frame(ws, timeout=30)  # generous: a loaded machine's SQLite writes can stall
        assert frame["type"] != "error" or frame.get("request_id") not in ("cancelled", None), frame
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
        tokens += (await next_frame(gone, timeout=30))["type"] == "llm_token"
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
        "from catalog.models import Deployment, Route, RouteCandidate; "
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
    org_budget = int((await asyncio.to_thread(budget_stack.configure, script)).strip().splitlines()[-1])
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


# --- A burst against a small budget, with clients that retry retryable answers -------------

def set_key_budget(stack: Stack, *, limit_usd: str, name: str) -> int:
    """Replace the demo org's budgets with one lifetime budget on the stack's key (and drop
    its rate cards: list prices); returns its id."""
    lookup = stack.api_key.split("_")[1]
    script = (
        "from decimal import Decimal; from billing.models import Budget, RateCard; from tenants.models import ApiKey; "
        f"key = ApiKey.objects.get(lookup={lookup!r}); Budget.objects.filter(org=key.org).delete(); "
        "RateCard.objects.filter(org=key.org).delete(); "
        f"print(Budget.objects.create(org=key.org, name={name!r}, scope='key', api_key=key, window='lifetime', "
        f"limit_usd=Decimal({limit_usd!r})).pk)"
    )
    return int(stack.configure(script).strip().splitlines()[-1])


async def retrying_burst(urls: list[str], key: str, *, connections: int, per_connection: int, prompt: str,
                         max_tokens: int) -> tuple[dict[str, dict], list[dict]]:
    """Send every request at once over `connections` sockets spread across `urls`, as a
    client that trusts the protocol does: a `retryable` error is sent again after its
    `retry_after_ms`, anything else is final. Returns each request's final frame and
    every retryable error seen."""
    finals: dict[str, dict] = {}
    retried: list[dict] = []

    async def one_socket(c: int) -> None:
        ws = await authed_socket(urls[c % len(urls)], key, max_size=None)
        starts: dict[str, dict] = {}

        async def send(request_id: str, delay_ms: int = 0) -> None:
            await asyncio.sleep(delay_ms / 1000)
            await send_frame(ws, {"type": "llm_request", "request_id": request_id, "model": "gpt-4-turbo",
                                  "prompt": prompt, "parameters": {"max_tokens": max_tokens}})

        resends = []
        for i in range(per_connection):
            await send(f"r{c}-{i}")
        done = 0
        while done < per_connection:
            frame = await next_frame(ws, timeout=60)
            if frame["type"] == "llm_response_start":
                starts[frame["request_id"]] = frame
            elif frame["type"] == "error" and frame["retryable"]:
                retried.append(frame)
                resends.append(asyncio.create_task(send(frame["request_id"], frame["retry_after_ms"])))
            elif frame["type"] in ("error", "llm_response_end"):
                finals[frame["request_id"]] = frame | {"start": starts.get(frame["request_id"])}
                done += 1
        await asyncio.gather(*resends)
        await ws.close()

    await asyncio.gather(*(one_socket(c) for c in range(connections)))
    return finals, retried


# A key's lifetime budget of $0.004 against 48 requests of at most 40 tokens (gpt-4-turbo,
# $10 / $30 per million): a worst case is about $0.0015, so two fit at once, but each
# request really produces 10 tokens (about $0.0004): six are served before settled spend
# leaves no room for another worst case.
BURST_LIMIT = Decimal("0.004")
BURST_PROMPT = "say ten words [[mock tokens=10 rate=100]]"


def worst_case(start: dict) -> Decimal:
    """The reservation of a request, from its start frame: the counted prompt plus the
    margin (10 %, rounded up, + 16) at $10/M, and max_tokens at $30/M."""
    prompt = -(-start["prompt_tokens"] * 11 // 10) + 16
    return (Decimal(10) * prompt + Decimal(30) * start["max_tokens"]) / 1_000_000


async def assert_burst_spends_the_budget(stack: Stack, urls: list[str]) -> None:
    await asyncio.to_thread(clear_usage, stack)
    budget_id = await asyncio.to_thread(set_key_budget, stack, limit_usd=str(BURST_LIMIT), name="trial key")
    finals, retried = await retrying_burst(urls, stack.api_key, connections=6, per_connection=8,
                                           prompt=BURST_PROMPT, max_tokens=40)
    served = [f for f in finals.values() if f["type"] == "llm_response_end"]
    refused = [f for f in finals.values() if f["type"] == "error"]
    assert len(finals) == 48 and served
    # Retryable answers were budget_busy (reservations in flight), with an estimate.
    for frame in retried:
        assert (frame["code"], frame["error"]) == (429, "budget_busy"), frame
        assert frame["retry_after_ms"] > 0 and "in flight" in frame["message"]
    usage = served[0]["usage"]  # at list prices ($10 / $30 per million), as worst_case assumes
    assert Decimal(served[0]["cost_usd"]) == (Decimal(10) * usage["prompt_tokens"]
                                              + Decimal(30) * usage["completion_tokens"]) / 1_000_000
    worst = worst_case(served[0]["start"])
    # A request is refused for good only when settled spend leaves no room for its worst case.
    for frame in refused:
        assert (frame["code"], frame["error"], frame["retryable"]) == (402, "budget_exhausted", False), frame
        spent = Decimal(re.search(r"used up: \$([0-9.]+) of \$0\.004 spent", frame["message"]).group(1))
        assert spent + worst > BURST_LIMIT, frame["message"]
    # One usage record per answer (each retry is a request of its own); the busy ones
    # are rejected records with no tokens.
    answers = len(finals) + len(retried)
    rows = await asyncio.to_thread(stack.wait_for_rows, "SELECT 1 FROM billing_usagerecord", count=answers)
    assert len(rows) == answers
    busy_rows = await asyncio.to_thread(stack.query, "SELECT status, prompt_tokens, completion_tokens, cost_usd "
                                                     "FROM billing_usagerecord WHERE error_code = 429")
    assert len(busy_rows) == len(retried)
    assert all((r[0], r[1], r[2], Decimal(str(r[3]))) == ("rejected", 0, 0, 0) for r in busy_rows)
    # The budget is spent to within one worst case, and never past it.
    total, _ = await asyncio.to_thread(usage_total, stack)
    assert BURST_LIMIT - worst < total <= BURST_LIMIT, (total, worst, len(served))
    state = await settled_state(stack, budget_id)
    assert (state["reserved_nanos"], state["open_leases"]) == (0, 0), state
    print(f"burst over {len(urls)} process(es): {len(served)} served, {len(refused)} refused 402, "
          f"{len(retried)} answered 429 budget_busy and retried; spent ${total} of ${BURST_LIMIT} (worst case ${worst})")


async def test_a_burst_with_retrying_clients_spends_a_small_budget_to_within_one_worst_case(budget_stack):
    await assert_burst_spends_the_budget(budget_stack, [budget_stack.url()])


async def test_a_burst_over_two_processes_spends_a_small_budget_to_within_one_worst_case(budget_stack):
    """Two gateway processes share the ledger: the database's (embedded pass, SQLite) or
    Redis (services pass). A settlement in one wakes the other's waiters by polling
    (database) or at once (Redis publishes it)."""
    second = budget_stack.start_gateway(OPENCLAW_MAX_IN_FLIGHT="50", OPENCLAW_BUDGET_LEASE_SECONDS=LEASE_SECONDS)
    try:
        await assert_burst_spends_the_budget(budget_stack, [budget_stack.url(), budget_stack.url(second)])
    finally:
        _stop(budget_stack, second)
