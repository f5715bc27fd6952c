"""The lean streaming path over real sockets: a running gateway (`manage.py serve`) with
the lean read on (the default) serves the demo's `gpt-4-turbo` deployment, and a copy of
it with `lean_stream` off is read by litellm; the same requests to both give the same
frames and the same usage rows (tests/gateway/test_lean_stream.py has the full matrix)."""
import asyncio
from decimal import Decimal

import pytest
import websockets

from tests.support.frames import collect, send_frame

pytestmark = pytest.mark.e2e

COPY = """
import uuid
from catalog.models import Deployment
d = Deployment.objects.get(org=None, name="gpt-4-turbo")
assert d.lean_stream
Deployment.objects.filter(org=None, name="gpt-4-turbo-litellm").delete()
d.pk, d.public_id, d.name, d.lean_stream = None, uuid.uuid4(), "gpt-4-turbo-litellm", False
d.save()
"""

CASES = [("normal", "tokens=40 rate=0 ttft_ms=0"), ("no-usage", "tokens=12 rate=0 ttft_ms=0 no_usage"),
         ("cut", "tokens=40 rate=0 ttft_ms=0 fault=cut cut_after=6"), ("limited", "fault=429 retry_after=2")]


def comparable(frames):
    out = []
    for frame in frames:
        # The two deployments' names (in `model` and the route) are all that may differ.
        frame = {k: v for k, v in frame.items() if k not in ("request_id", "latency_ms", "model")}
        if "route" in frame:
            frame["route"] = {k: v for k, v in frame["route"].items() if k not in ("deployment", "reason")}
        if "message" in frame:
            frame["message"] = frame["message"].replace("'gpt-4-turbo-litellm'", "'gpt-4-turbo'")
        out.append(frame)
    return out


async def test_the_lean_path_and_litellms_answer_alike_over_real_sockets(stack):
    await asyncio.to_thread(stack.configure, COPY)
    results = {}
    async with websockets.connect(stack.url()) as ws:
        await send_frame(ws, {"type": "auth", "token": stack.api_key})
        await collect_auth(ws)
        for name, directives in CASES:
            for model in ("gpt-4-turbo", "gpt-4-turbo-litellm"):
                rid = f"lean-e2e-{name}-{model}"
                await send_frame(ws, {"type": "llm_request", "request_id": rid, "model": model,
                                      "prompt": f"compare [[mock {directives}]]"})
                frames = (await collect(ws))[rid]
                rows = await asyncio.to_thread(
                    stack.wait_for_rows, "SELECT status, prompt_tokens, completion_tokens, completion_tokens_source, "
                    "cost_usd, error_code FROM billing_usagerecord WHERE client_request_id = %s", (rid,))
                status, prompt, completion, source, cost, code = rows[0]
                results[name, model] = (comparable(frames), (status, prompt, completion, source,
                                                             Decimal(str(cost)), code))
    for name, _ in CASES:
        lean, full = results[name, "gpt-4-turbo"], results[name, "gpt-4-turbo-litellm"]
        assert lean == full, f"{name}:\nlean:    {lean}\nlitellm: {full}"
    assert results["normal", "gpt-4-turbo"][1][0] == "completed"
    assert results["cut", "gpt-4-turbo"][1][:1] == ("upstream_error",)
    assert results["cut", "gpt-4-turbo"][0][-1]["code"] == 502
    assert results["limited", "gpt-4-turbo"][0][-1]["code"] == 502


async def collect_auth(ws):
    from tests.support.frames import next_frame

    assert (await next_frame(ws))["type"] == "auth_ok"
