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
