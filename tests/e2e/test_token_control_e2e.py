"""Rate limits counted across two real gateway processes (sharing Redis in the services
pass, the SQLite database in the embedded one), over real sockets."""
import asyncio
import time

import pytest
import websockets

from tests.support.frames import collect, next_frame, send_frame

pytestmark = pytest.mark.e2e


def limited_key(stack, rpm: int) -> str:
    script = (
        "from tenants.models import Organization; from tenants.services import api_key_create; "
        "org = Organization.objects.get(slug='demo'); "
        f"issued = api_key_create(org=org, name='limited'); k = issued.api_key; k.rpm_limit = {rpm}; k.save(); "
        "print(issued.raw)"
    )
    return stack.manage("shell", "-c", script).strip().splitlines()[-1]


async def test_a_keys_requests_per_minute_are_counted_across_gateway_processes(stack):
    key = await asyncio.to_thread(limited_key, stack, 5)
    second = stack.start_gateway()
    sockets = []
    for url in (stack.url(), stack.url(second)):
        ws = await websockets.connect(url)
        await send_frame(ws, {"type": "auth", "token": key})
        assert (await next_frame(ws))["type"] == "auth_ok"
        sockets.append(ws)
    into = time.time() % 60
    if into > 50:  # keep the burst inside one UTC minute
        await asyncio.sleep(60 - into + 0.05)
    for p, ws in enumerate(sockets):
        for i in range(4):
            await send_frame(ws, {"type": "llm_request", "request_id": f"p{p}-{i}", "model": "gpt-4-turbo",
                                  "prompt": "hi [[mock tokens=2]]"})
    results = await asyncio.gather(*(collect(ws, until=4) for ws in sockets))
    minute_ends_in = 60_000 - int(time.time() * 1000) % 60_000
    terminals = [frames[-1] for by_request in results for frames in by_request.values()]
    served = [f for f in terminals if f["type"] == "llm_response_end"]
    refused = [f for f in terminals if f["type"] == "error"]
    assert len(served) == 5 and len(refused) == 3
    assert {f["code"] for f in refused} == {429}
    for frame in refused:
        assert abs(frame["retry_after_ms"] - minute_ends_in) < 2_000
    for ws in sockets:
        await ws.close()


async def test_clamps_truncation_and_the_throttle_over_real_sockets(stack):
    """The org's output cap and input limit, and a budget throttling past its soft
    threshold, as a client on a real socket sees them."""
    script = (
        "from decimal import Decimal; from billing.models import Budget; from tenants.models import Organization; "
        "from tenants.services import api_key_create; org = Organization.objects.get(slug='demo'); "
        "org.max_tokens_per_request = 40; org.max_input_tokens = 300; org.save(); "
        "Budget.objects.filter(org=org).delete(); issued = api_key_create(org=org, name='token control'); "
        # A key budget: the new key has spent nothing yet (an org budget would count the
        # day's earlier traffic of this shared stack).
        "Budget.objects.create(org=org, name='throttled', scope='key', api_key=issued.api_key, window='day', "
        "limit_usd=Decimal('0.02'), soft_threshold_percent=1, throttle_rpm=2); "
        "print(issued.raw)"
    )
    key = (await asyncio.to_thread(stack.configure, script)).strip().splitlines()[-1]
    try:
        ws = await websockets.connect(stack.url())
        await send_frame(ws, {"type": "auth", "token": key})
        assert (await next_frame(ws))["type"] == "auth_ok"
        into = time.time() % 60
        if into > 50:
            await asyncio.sleep(60 - into + 0.05)
        history = []
        for i in range(8):
            history += [{"role": "user", "content": f"question {i} " + "tell me more " * 20},
                        {"role": "assistant", "content": f"answer {i} " + "here is more " * 20}]
        messages = [{"role": "system", "content": "be brief"}, *history,
                    {"role": "user", "content": "and now? [[mock tokens=5]]"}]
        await send_frame(ws, {"type": "llm_request", "request_id": "long", "model": "gpt-4-turbo",
                              "messages": messages, "parameters": {"max_tokens": 5000}})
        frames = (await collect(ws))["long"]
        start = frames[0]
        assert frames[-1]["type"] == "llm_response_end", frames
        assert start["max_tokens"] == 40  # the org's cap, not the 5000 asked for
        assert start["truncated"] is True and start["truncated_tokens"] > 0 and start["prompt_tokens"] <= 300
        # Past the budget's (1%) soft threshold: two requests a minute, then 429.
        codes = []
        for i in range(3):
            await send_frame(ws, {"type": "llm_request", "request_id": f"t{i}", "model": "gpt-4-turbo",
                                  "prompt": "hi [[mock tokens=2]]", "parameters": {"max_tokens": 10}})
            codes.append((await collect(ws))[f"t{i}"][-1].get("code", 200))
        assert codes[-1] == 429 and codes.count(200) >= 1
        await ws.close()
    finally:
        await asyncio.to_thread(stack.manage, "shell", "-c", (
            "from billing.models import Budget; from tenants.models import Organization; "
            "org = Organization.objects.get(slug='demo'); Budget.objects.filter(org=org).delete(); "
            "org.max_tokens_per_request = None; org.max_input_tokens = None; org.save()"))
