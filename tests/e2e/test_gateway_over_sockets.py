"""The real ASGI server, over real sockets, with a real WebSocket client library."""
import asyncio
import json
import urllib.request
from decimal import Decimal

import pytest
import websockets

from tests.support.frames import collect, next_frame, send_frame, text_of

pytestmark = pytest.mark.e2e


async def test_the_article_flow_streams_tokens_and_records_usage(stack):
    async with websockets.connect(stack.url()) as ws:
        # The article's client: auth frame on open, then llm_request without waiting.
        await send_frame(ws, {"type": "auth", "token": stack.api_key})
        await send_frame(ws, {"type": "llm_request", "request_id": "e2e-1", "model": "gpt-4-turbo",
                              "prompt": "Explain entanglement [[mock tokens=16 rate=0 ttft_ms=0]]",
                              "parameters": {"max_tokens": 500, "temperature": 0.7, "stream": True},
                              "metadata": {"user_id": "user123", "priority": "normal"}})
        assert (await next_frame(ws))["type"] == "auth_ok"
        frames = (await collect(ws))["e2e-1"]
    assert frames[0]["type"] == "llm_response_start" and frames[0]["route"]["provider"] == "mock"
    assert len(text_of(frames).split()) == 16
    end = frames[-1]
    assert end["type"] == "llm_response_end" and end["finish_reason"] == "stop"
    # gpt-4-turbo demo prices: $10 in / $30 out per million tokens
    usage = end["usage"]
    expected = (Decimal(usage["prompt_tokens"]) * 10 + Decimal(usage["completion_tokens"]) * 30) / 10**6
    assert Decimal(end["cost_usd"]) == expected
    rows = await asyncio.to_thread(
        stack.wait_for_rows, "SELECT status, prompt_tokens, completion_tokens, cost_usd, end_user "
                     "FROM billing_usagerecord WHERE client_request_id = %s", ("e2e-1",))
    status, prompt, completion, cost, end_user = rows[0]
    assert (status, prompt, completion, end_user) == ("completed", usage["prompt_tokens"], 16, "user123")
    assert Decimal(str(cost)) == expected


async def test_a_bearer_header_authenticates_a_server_client(stack):
    async with websockets.connect(stack.url(), additional_headers={"Authorization": f"Bearer {stack.api_key}"}) as ws:
        ok = await next_frame(ws)
        assert ok["type"] == "auth_ok" and ok["org"] == "demo"


async def test_a_bad_key_is_told_why_and_closed_with_4401(stack):
    async with websockets.connect(stack.url()) as ws:
        await send_frame(ws, {"type": "auth", "token": "ocw_wrong"})
        error = await next_frame(ws)
        assert error["code"] == 401
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4401


async def test_a_bad_bearer_header_is_not_an_http_403(stack):
    # Browsers cannot read an HTTP 403 on upgrade; the gateway accepts first, then closes 4401.
    async with websockets.connect(stack.url(), additional_headers={"Authorization": "Bearer nope"}) as ws:
        assert (await next_frame(ws))["code"] == 401
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4401


async def test_a_revoked_key_cannot_connect_any_more(stack):
    key = (await asyncio.to_thread(stack.manage, "create_api_key", "--org", "demo", "--name", "to revoke")).strip()
    async with websockets.connect(stack.url()) as ws:
        await send_frame(ws, {"type": "auth", "token": key})
        assert (await next_frame(ws))["type"] == "auth_ok"
    await asyncio.to_thread(stack.manage, "revoke_api_key", key[:14])
    async with websockets.connect(stack.url()) as ws:
        await send_frame(ws, {"type": "auth", "token": key})
        error = await next_frame(ws)
        assert error["code"] == 401 and "revoked" in error["message"]


async def test_concurrent_requests_and_errors_on_one_real_socket(stack):
    async with websockets.connect(stack.url()) as ws:
        await send_frame(ws, {"type": "auth", "token": stack.api_key})
        assert (await next_frame(ws))["type"] == "auth_ok"
        await send_frame(ws, {"type": "llm_request", "request_id": "a", "model": "gpt-4-turbo",
                              "prompt": "a [[mock tokens=20 rate=200 ttft_ms=0]]"})
        await send_frame(ws, {"type": "llm_request", "request_id": "b", "model": "claude-3-opus",
                              "prompt": "b [[mock tokens=20 rate=200 ttft_ms=0]]", "parameters": {"stream": False}})
        await send_frame(ws, {"type": "llm_request", "request_id": "c", "model": "no-such-model", "prompt": "c"})
        await send_frame(ws, {"type": "llm_request", "request_id": "d", "model": "gpt-4-turbo",
                              "prompt": "d [[mock fault=503]]"})
        frames = await collect(ws, until=4)
    assert frames["a"][-1]["type"] == "llm_response_end"
    assert [f["type"] for f in frames["b"]] == ["llm_response_start", "llm_token", "llm_response_end"]
    assert frames["b"][0]["route"]["deployment"] == "claude-3-opus"
    assert frames["c"][-1]["code"] == 404
    assert frames["d"][-1]["code"] == 502 and "LEAKED" not in frames["d"][-1]["message"]


def test_healthz_answers_over_http(stack):
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/healthz", timeout=10) as response:
        assert json.load(response) == {"status": "ok"}


def test_readyz_reports_database_channel_layer_and_broker(stack):
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.port}/readyz", timeout=15) as response:
        body = json.load(response)
    assert response.status == 200
    assert body == {"status": "ready", "checks": {"database": "ok", "channel_layer": "ok", "broker": "ok"}}


async def test_cancel_and_disconnect_close_the_upstream_within_200ms(stack, mockllm):
    import time

    async with websockets.connect(stack.url()) as ws:
        await send_frame(ws, {"type": "auth", "token": stack.api_key})
        assert (await next_frame(ws))["type"] == "auth_ok"
        for rid in ("e2e-cancel", "e2e-gone"):
            await send_frame(ws, {"type": "llm_request", "request_id": rid, "model": "gpt-4-turbo",
                                  "prompt": f"x [[mock tokens=5000 rate=50 ttft_ms=0 tag={rid}]]"})
        seen = set()
        while seen != {"e2e-cancel", "e2e-gone"}:
            frame = await next_frame(ws)
            if frame["type"] == "llm_token":
                seen.add(frame["request_id"])
        cancelled_at = time.time()
        await send_frame(ws, {"type": "cancel", "request_id": "e2e-cancel"})
        while True:
            frame = await next_frame(ws)
            if frame.get("request_id") == "e2e-cancel" and frame["type"] == "llm_response_end":
                break
        assert frame["finish_reason"] == "cancelled"
        gone_at = time.time()
    # Leaving the block closed the socket with "e2e-gone" still streaming.
    for tag, since in (("e2e-cancel", cancelled_at), ("e2e-gone", gone_at)):
        record = await asyncio.to_thread(mockllm.wait_for_event, tag, lambda r: r["client_gone_at"] is not None, 5)
        assert record["client_gone_at"] - since < 0.2, (tag, record["client_gone_at"] - since)
    rows = await asyncio.to_thread(
        stack.wait_for_rows, "SELECT client_request_id, status FROM billing_usagerecord "
        "WHERE client_request_id IN ('e2e-cancel', 'e2e-gone') ORDER BY client_request_id", (), count=2)
    assert rows == [("e2e-cancel", "cancelled"), ("e2e-gone", "client_gone")]


async def test_an_oversized_frame_is_answered_by_the_gateway_not_the_server(stack):
    async with websockets.connect(stack.url(), max_size=None) as ws:
        await send_frame(ws, {"type": "auth", "token": stack.api_key})
        limit = (await next_frame(ws))["limits"]["max_message_bytes"]
        await ws.send(json.dumps({"type": "llm_request", "model": "gpt-4-turbo", "prompt": "x" * (limit + 10)}))
        error = await next_frame(ws)
        assert error["code"] == 413
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd.code == 4413
