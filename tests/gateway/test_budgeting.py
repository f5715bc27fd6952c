"""Budgets on the request path (gateway/budgeting.py), through the consumer, against the real mock LLM over
HTTP, with the ledger of the pass (database row locks, or Redis in the services pass)."""
import asyncio
from decimal import Decimal

import pytest
from channels.testing import WebsocketCommunicator

from billing.models import Budget, BudgetCounter, BudgetLease, RateCard, UsageRecord
from billing.recorder import usage_recorder
from openclaw_site.asgi import application
from tests.support.frames import collect, next_frame, send_frame, text_of

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def deployment(make_deployment):
    return make_deployment("mock-fast")  # $2.50 in / $10.00 out per million tokens


async def authed(issued_key):
    comm = WebsocketCommunicator(application, "/websocket")
    connected, _ = await comm.connect()
    assert connected
    await send_frame(comm, {"type": "auth", "token": issued_key.raw})
    ok = await next_frame(comm)
    assert ok["type"] == "auth_ok", ok
    return comm, ok


async def settled() -> None:
    assert await usage_recorder.flush(timeout=10)


async def no_open_leases() -> bool:
    from billing.ledger import ledger

    books = ledger()
    if books.kind == "database":
        return not await BudgetLease.objects.aexists()
    return await books._redis.zcard(books._leases) == 0


async def test_a_request_that_fits_is_served_and_settled_to_its_real_cost(org, issued_key, deployment):
    budget = await Budget.objects.acreate(org=org, name="monthly", window="month", limit_usd=Decimal("1"))
    comm, _ = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "r1", "model": "mock-fast",
                            "prompt": "hello [[mock tokens=5]]", "parameters": {"max_tokens": 50}})
    frames = (await collect(comm))["r1"]
    end = frames[-1]
    assert end["type"] == "llm_response_end", frames
    assert "budget" not in end  # the org did not ask for it
    await comm.disconnect()
    await settled()
    record = await UsageRecord.objects.aget(client_request_id="r1")
    assert end["cost_usd"] == format(record.cost_usd.normalize(), "f")
    from billing.ledger import ledger

    [state] = await ledger().snapshot(await _refs(budget))
    assert state.reserved_nanos == 0 and state.reserved_tokens == 0
    assert state.spent_nanos == int(record.cost_usd * 10**9)
    assert state.spent_tokens == record.prompt_tokens + record.completion_tokens
    assert await no_open_leases()


async def _refs(budget):
    from django.utils import timezone

    from billing.budgets import BudgetRule, counter_refs

    rule = await asyncio.to_thread(lambda: BudgetRule.from_model(Budget.objects.get(pk=budget.pk)))
    return counter_refs([rule], end_user="", at=timezone.now())


async def test_a_request_whose_worst_case_does_not_fit_gets_402_with_the_numbers(org, issued_key, deployment):
    # max_tokens 1000 at $10/M is $0.01 of output alone: more than the whole budget.
    await Budget.objects.acreate(org=org, name="tiny", window="day", limit_usd=Decimal("0.005"))
    comm, _ = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "big", "model": "mock-fast",
                            "prompt": "hello", "parameters": {"max_tokens": 1000}})
    error = await next_frame(comm)
    assert (error["type"], error["code"], error["error"], error["request_id"]) == (
        "error", 402, "budget_exhausted", "big")
    assert "'tiny' (organization, day)" in error["message"] and "resets at" in error["message"]
    assert "$0.005" in error["message"]
    # A smaller request still fits.
    await send_frame(comm, {"type": "llm_request", "request_id": "small", "model": "mock-fast",
                            "prompt": "hello [[mock tokens=3]]", "parameters": {"max_tokens": 100}})
    assert (await collect(comm))["small"][-1]["type"] == "llm_response_end"
    await comm.disconnect()
    await settled()
    record = await UsageRecord.objects.aget(client_request_id="big")
    assert (record.status, record.error_code, record.cost_usd) == ("rejected", 402, 0)


async def test_a_token_budget_counts_prompt_and_completion(org, issued_key, deployment):
    await Budget.objects.acreate(org=org, name="tokens", window="hour", limit_tokens=400)
    comm, _ = await authed(issued_key)
    served = refused = 0
    for i in range(6):
        await send_frame(comm, {"type": "llm_request", "request_id": f"t{i}", "model": "mock-fast",
                                "prompt": "hi [[mock tokens=60]]", "parameters": {"max_tokens": 60}})
        last = (await collect(comm))[f"t{i}"][-1]
        if last["type"] == "llm_response_end":
            served += 1
        else:
            assert last["code"] == 402 and "of 400 tokens" in last["message"]
            refused += 1
    await comm.disconnect()
    await settled()
    used = sum([r.prompt_tokens + r.completion_tokens async for r in UsageRecord.objects.all()])
    assert used <= 400 and served >= 2 and refused >= 1


async def test_concurrent_requests_never_pass_the_limit(org, issued_key, deployment):
    # Each request's worst case: (prompt + margin) x $2.50/M + 100 x $10/M, about $0.00105.
    limit = Decimal("0.0105")
    await Budget.objects.acreate(org=org, name="race", window="month", limit_usd=limit)
    comms = [(await authed(issued_key))[0] for _ in range(5)]
    for c, comm in enumerate(comms):
        for i in range(8):
            await send_frame(comm, {"type": "llm_request", "request_id": f"c{c}-{i}", "model": "mock-fast",
                                    "prompt": "go [[mock tokens=100 rate=400]]", "parameters": {"max_tokens": 100}})
    outcomes = []
    for comm in comms:
        for frames in (await collect(comm, until=8, timeout=30)).values():
            outcomes.append(frames[-1])
    for comm in comms:
        await comm.disconnect()
    await settled()
    served = [f for f in outcomes if f["type"] == "llm_response_end"]
    refused = [f for f in outcomes if f["type"] == "error"]
    assert len(served) + len(refused) == 40
    # Used up (402), or still busy with reservations in flight after the wait (429,
    # retryable: this client does not retry; the end-to-end burst tests do).
    for f in refused:
        assert (f["code"], f["error"], f["retryable"]) in ((402, "budget_exhausted", False),
                                                           (429, "budget_busy", True)), f
    assert 5 <= len(served) < 40
    total = sum([r.cost_usd async for r in UsageRecord.objects.all()], Decimal(0))
    rows = [(r.client_request_id, r.status, r.prompt_tokens, r.completion_tokens, str(r.cost_usd), r.max_tokens) async for r in UsageRecord.objects.exclude(status="rejected")]
    counters = [(c.spent_nanos, c.reserved_nanos) async for c in BudgetCounter.objects.all()]
    assert total <= limit, (rows, counters)
    assert await no_open_leases()


async def test_cancel_settles_to_the_tokens_received(org, issued_key, deployment):
    budget = await Budget.objects.acreate(org=org, name="m", window="month", limit_usd=Decimal("5"))
    comm, _ = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "c", "model": "mock-fast",
                            "prompt": "go [[mock tokens=500 rate=100]]", "parameters": {"max_tokens": 600}})
    got = 0
    while got < 5:
        frame = await next_frame(comm)
        got += frame["type"] == "llm_token"
    await send_frame(comm, {"type": "cancel", "request_id": "c"})
    frames = (await collect(comm))["c"]
    assert frames[-1]["finish_reason"] == "cancelled"
    await comm.disconnect()
    await settled()
    record = await UsageRecord.objects.aget(client_request_id="c")
    assert record.status == "cancelled" and 5 <= record.completion_tokens < 500
    from billing.ledger import ledger

    [state] = await ledger().snapshot(await _refs(budget))
    assert state.reserved_nanos == 0
    assert state.spent_tokens == record.prompt_tokens + record.completion_tokens


async def test_the_gateway_stops_a_stream_at_the_clamped_max_tokens(org, issued_key, deployment):
    await Budget.objects.acreate(org=org, name="m", window="month", limit_usd=Decimal("5"))
    comm, _ = await authed(issued_key)
    # The mock is told to ignore max_tokens and send 80: the gateway stops at 20.
    await send_frame(comm, {"type": "llm_request", "request_id": "x", "model": "mock-fast",
                            "prompt": "go [[mock tokens=80 overrun]]", "parameters": {"max_tokens": 20}})
    frames = (await collect(comm))["x"]
    assert frames[-1]["finish_reason"] == "length"
    assert len([f for f in frames if f["type"] == "llm_token"]) == 20
    await comm.disconnect()


async def test_the_org_can_tell_clients_their_remaining_budget(org, issued_key, deployment):
    org.budget_in_protocol = True
    await org.asave()
    await Budget.objects.acreate(org=org, name="month", window="month", limit_usd=Decimal("2"))
    await Budget.objects.acreate(org=org, name="tight tokens", window="day", limit_tokens=10_000)
    comm, ok = await authed(issued_key)
    # Both untouched: equally tight, the first one is told.
    assert ok["budget"] == {"budget": "month", "remaining_usd": "2", "remaining_tokens": None,
                            "window_end": ok["budget"]["window_end"]}
    assert ok["budget"]["window_end"].endswith("-01T00:00:00Z")
    await send_frame(comm, {"type": "llm_request", "request_id": "r", "model": "mock-fast",
                            "prompt": "hello [[mock tokens=5]]", "parameters": {"max_tokens": 50}})
    end = (await collect(comm))["r"][-1]
    used = end["usage"]["total_tokens"]
    # Now the token budget has the smaller share left.
    assert end["budget"]["budget"] == "tight tokens" and end["budget"]["remaining_usd"] is None
    assert end["budget"]["remaining_tokens"] == 10_000 - used
    assert end["budget"]["window_end"].endswith("T00:00:00Z")
    await comm.disconnect()


async def premium_and_cheap_routes(org, make_deployment):
    """Two single-deployment routes: "premium" ($30/$60 per million) and "cheap" ($0.5/$1.5)."""
    from catalog.models import Route, RouteCandidate

    routes = []
    for alias, (input_price, output_price) in (("premium", ("30", "60")), ("cheap", ("0.5", "1.5"))):
        deployment = await asyncio.to_thread(make_deployment, f"mock-{alias}", input_price=input_price,
                                             output_price=output_price)
        route = await Route.objects.acreate(org=org, alias=alias, strategy="fallback")
        await RouteCandidate.objects.acreate(route=route, deployment=deployment)
        routes.append(route)
    return routes


async def test_a_filtered_budget_falls_back_to_a_cheaper_route_and_still_counts_on_the_org(
        org, issued_key, make_deployment):
    premium, cheap = await premium_and_cheap_routes(org, make_deployment)
    await Budget.objects.acreate(org=org, name="premium cap", window="month", limit_usd=Decimal("0.000001"),
                                 route=premium, hard_action="fallback", fallback_route=cheap)
    org_budget = await Budget.objects.acreate(org=org, name="org", window="month", limit_usd=Decimal("10"))
    comm, _ = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "f", "model": "premium",
                            "prompt": "hello [[mock tokens=4]]", "parameters": {"max_tokens": 20}})
    frames = (await collect(comm))["f"]
    start, end = frames[0], frames[-1]
    assert end["type"] == "llm_response_end", frames
    assert start["model"] == "premium" and start["route"]["deployment"] == "mock-cheap"
    assert start["route"]["budget_fallback"] == [{"budget": "premium cap", "from": "premium", "to": "cheap"}]
    assert "premium cap" in start["route"]["reason"]
    await comm.disconnect()
    await settled()
    record = await UsageRecord.objects.aget(client_request_id="f")
    assert record.deployment_name == "mock-cheap" and record.via_route_id == cheap.pk
    from billing.ledger import ledger

    [state] = await ledger().snapshot(await _refs(org_budget))
    assert state.spent_nanos == int(record.cost_usd * 10**9) > 0


async def test_rate_card_prices_are_applied_and_kept_with_the_usage(org, issued_key, deployment):
    await RateCard.objects.acreate(org=org, multiplier=Decimal("0.8"))
    comm, _ = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "rc", "model": "mock-fast",
                            "prompt": "hello [[mock tokens=7]]"})
    end = (await collect(comm))["rc"][-1]
    await comm.disconnect()
    await settled()
    record = await UsageRecord.objects.aget(client_request_id="rc")
    # $2.50 and $10.00 per million x 0.8 = $2.00 and $8.00.
    assert (record.input_price_per_mtok, record.output_price_per_mtok) == (Decimal("2"), Decimal("8"))
    expected = (Decimal(2) * record.prompt_tokens + Decimal(8) * record.completion_tokens) / 1_000_000
    assert record.cost_usd == expected
    assert end["cost_usd"] == format(expected.normalize(), "f")


# --- Busy, not used up: reservations in flight ------------------------------------------

async def _start_holder(comm, request_id: str, prompt: str, max_tokens: int) -> None:
    """A request that holds its reservation: streaming (its first token received)."""
    await send_frame(comm, {"type": "llm_request", "request_id": request_id, "model": "mock-fast",
                            "prompt": prompt, "parameters": {"max_tokens": max_tokens}})
    while (await next_frame(comm, timeout=30))["type"] != "llm_token":
        pass


async def test_a_request_waits_for_reservations_in_flight_and_is_served_when_they_settle(
        org, issued_key, deployment, settings):
    settings.GATEWAY = {**settings.GATEWAY, "BUDGET_BUSY_WAIT_MS": 20_000}  # generous: the machine may be slow
    # A worst case of 200 output tokens is about $0.0021; two do not fit at once in
    # $0.003, but the first really uses 10 tokens (about $0.0001).
    await Budget.objects.acreate(org=org, name="small", window="lifetime", limit_usd=Decimal("0.003"))
    holder, _ = await authed(issued_key)
    await _start_holder(holder, "first", "go [[mock tokens=10 rate=10]]", 200)
    comm, _ = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "second", "model": "mock-fast",
                            "prompt": "go [[mock tokens=3]]", "parameters": {"max_tokens": 200}})
    assert (await collect(holder, timeout=30))["first"][-1]["type"] == "llm_response_end"
    frames = (await collect(comm, timeout=30))["second"]
    assert frames[-1]["type"] == "llm_response_end", frames  # not a 402: the budget was never used up
    await holder.disconnect()
    await comm.disconnect()
    await settled()
    assert await no_open_leases()


async def test_a_budget_still_busy_after_the_wait_answers_429_budget_busy(org, issued_key, deployment, settings,
                                                                           monkeypatch):
    from billing import notifications

    notices = []
    monkeypatch.setattr(notifications, "enqueue_budget_notice", lambda **notice: notices.append(notice["kind"]))
    settings.GATEWAY = {**settings.GATEWAY, "BUDGET_BUSY_WAIT_MS": 300}
    await Budget.objects.acreate(org=org, name="small", window="lifetime", limit_usd=Decimal("0.003"))
    holder, _ = await authed(issued_key)
    await _start_holder(holder, "long", "go [[mock tokens=200 rate=20]]", 200)  # ten seconds in flight
    comm, _ = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "busy", "model": "mock-fast",
                            "prompt": "go [[mock tokens=3]]", "parameters": {"max_tokens": 200}})
    error = await next_frame(comm, timeout=30)
    assert (error["type"], error["request_id"], error["code"], error["error"], error["retryable"]) == (
        "error", "busy", 429, "budget_busy", True)
    assert 50 <= error["retry_after_ms"] <= 30_000
    assert error["message"].startswith("budget 'small' (organization, lifetime) is busy: $0 of $0.003 spent and ")
    assert "reserved by requests in flight" in error["message"] and "not used up" in error["message"]
    await send_frame(holder, {"type": "cancel", "request_id": "long"})
    assert (await collect(holder, timeout=30))["long"][-1]["finish_reason"] == "cancelled"
    await holder.disconnect()
    await comm.disconnect()
    await settled()
    # Refused before upstream, like every refusal: one rejected record with no tokens.
    record = await UsageRecord.objects.aget(client_request_id="busy")
    assert (record.status, record.error_code, record.prompt_tokens, record.completion_tokens, record.cost_usd) == (
        "rejected", 429, 0, 0, 0)
    assert await no_open_leases()
    assert "hard" not in notices  # busy is not used up: no hard-limit notification


async def test_a_busy_fallback_budget_waits_then_falls_back(org, issued_key, make_deployment, settings):
    """A filtered budget with a fallback that stays busy past the wait re-routes, as
    when used up: the request is served (by the fallback) rather than told to retry."""
    settings.GATEWAY = {**settings.GATEWAY, "BUDGET_BUSY_WAIT_MS": 300}
    premium, cheap = await premium_and_cheap_routes(org, make_deployment)
    # Fits one premium worst case of 100 tokens (about $0.0071) at a time.
    await Budget.objects.acreate(org=org, name="premium cap", window="month", limit_usd=Decimal("0.01"),
                                 route=premium, hard_action="fallback", fallback_route=cheap)
    holder, _ = await authed(issued_key)
    await send_frame(holder, {"type": "llm_request", "request_id": "long", "model": "premium",
                              "prompt": "go [[mock tokens=100 rate=10]]", "parameters": {"max_tokens": 100}})
    while (await next_frame(holder, timeout=30))["type"] != "llm_token":
        pass
    comm, _ = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "f", "model": "premium",
                            "prompt": "hello [[mock tokens=4]]", "parameters": {"max_tokens": 100}})
    frames = (await collect(comm, timeout=30))["f"]
    start, end = frames[0], frames[-1]
    assert end["type"] == "llm_response_end", frames
    assert start["route"]["deployment"] == "mock-cheap"
    assert start["route"]["budget_fallback"] == [{"budget": "premium cap", "from": "premium", "to": "cheap"}]
    await send_frame(holder, {"type": "cancel", "request_id": "long"})
    await collect(holder, timeout=30)
    await holder.disconnect()
    await comm.disconnect()
    await settled()
