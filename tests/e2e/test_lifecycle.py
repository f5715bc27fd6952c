"""Across processes and over real sockets: revocation in every process, graceful shutdown."""
import asyncio
import json
import signal
import time

import pytest
import websockets

from tests.support.frames import authed_socket, collect, next_frame, send_frame
from tests.support.routes import define_route
from tests.support.services import require

pytestmark = pytest.mark.e2e


async def wait_closed(ws, timeout=5):
    frames = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            frames.append(await asyncio.wait_for(ws.recv(), timeout))
    return frames, closed.value.rcvd.code if closed.value.rcvd else None


async def test_revoking_a_key_closes_its_sockets_in_every_gateway_process(stack):
    require("redis")  # processes share the channel layer through Redis
    second_port = stack.start_gateway()
    key = (await asyncio.to_thread(stack.manage, "create_api_key", "--org", "demo", "--name", "two procs")).strip()
    first = await authed_socket(stack.url(), key)
    second = await authed_socket(stack.url(second_port), key)
    started = time.monotonic()
    await asyncio.to_thread(stack.manage, "revoke_api_key", key[:14])
    revoke_done = time.monotonic()
    for ws in (first, second):
        _frames, code = await wait_closed(ws)
        assert code == 4401
    # Within a second of the revocation being committed (manage.py's own start-up excluded).
    assert time.monotonic() - revoke_done < 1.0, time.monotonic() - started


async def test_sigterm_drains_streams_closes_1001_and_loses_no_usage(stack):
    port = stack.start_gateway(OPENCLAW_SHUTDOWN_DRAIN_SECONDS="5")
    process = dict(stack.processes)[f"gateway:{port}"]
    ws = await authed_socket(stack.url(port), stack.api_key)
    await send_frame(ws, {"type": "llm_request", "request_id": "drain-short", "model": "gpt-4-turbo",
                          "prompt": "short [[mock tokens=40 rate=40 ttft_ms=0]]"})
    await send_frame(ws, {"type": "llm_request", "request_id": "drain-long", "model": "gpt-4-turbo",
                          "prompt": "long [[mock tokens=5000 rate=40 ttft_ms=0]]"})
    while (await next_frame(ws))["type"] != "llm_token":
        pass
    process.send_signal(signal.SIGTERM)
    # Once it drains (a connection made before the signal is handled is one of those it
    # drains), a new connection is accepted and told to go elsewhere (503, close 1001).
    for _ in range(100):
        if "draining" in stack.log(port):
            break
        await asyncio.sleep(0.05)
    late_frames, late_code = await wait_closed(await websockets.connect(stack.url(port)))
    assert late_code == 1001 and json.loads(late_frames[0])["code"] == 503, late_frames
    frames = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            frames.append(await next_frame(ws, timeout=15))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, (frames[-3:], stack.log(port)[-3000:])
    by_id = {}
    for frame in frames:
        by_id.setdefault(frame.get("request_id"), []).append(frame)
    # The short stream finished within the drain window; the long one was stopped and told why.
    assert by_id["drain-short"][-1]["type"] == "llm_response_end"
    assert by_id["drain-short"][-1]["finish_reason"] == "stop"
    assert by_id["drain-long"][-1]["type"] == "error" and by_id["drain-long"][-1]["code"] == 503
    assert process.wait(timeout=30) is not None
    rows = stack.query("SELECT client_request_id, status, completion_tokens FROM billing_usagerecord "
                       "WHERE client_request_id IN ('drain-short', 'drain-long') ORDER BY client_request_id")
    assert [(r[0], r[1]) for r in rows] == [("drain-long", "cancelled"), ("drain-short", "completed")]
    assert rows[0][2] > 0


async def test_an_idle_authenticated_socket_stays_open(stack):
    # Longer than every short internal timeout (e.g. the channel layer's 5 s blocking pop).
    ws = await authed_socket(stack.url(), stack.api_key)
    await asyncio.sleep(12)
    await send_frame(ws, {"type": "ping"})
    assert (await next_frame(ws))["type"] == "pong"
    await ws.close()


async def test_disabling_a_deployment_is_seen_by_every_process_within_a_second(stack):
    second_port = stack.start_gateway()
    sockets = [await authed_socket(stack.url(), stack.api_key),
               await authed_socket(stack.url(second_port), stack.api_key)]
    request = {"type": "llm_request", "model": "claude-3-opus", "prompt": "x [[mock tokens=2 rate=0 ttft_ms=0]]"}
    for i, ws in enumerate(sockets):  # both processes have the deployment resolved (and cached)
        await send_frame(ws, {**request, "request_id": f"before-{i}"})
        assert (await collect(ws))[f"before-{i}"][-1]["type"] == "llm_response_end"
    toggle = ("from catalog.models import Deployment; "
              "Deployment.objects.filter(name='claude-3-opus').update(enabled={})")
    try:
        await asyncio.to_thread(stack.configure, toggle.format(False))
        for i, ws in enumerate(sockets):
            await send_frame(ws, {**request, "request_id": f"after-{i}"})
            error = (await collect(ws))[f"after-{i}"][-1]
            assert (error["type"], error["code"]) == ("error", 503)
    finally:
        await asyncio.to_thread(stack.manage, "shell", "-c", toggle.format(True))
        for ws in sockets:
            await ws.close()


async def test_a_route_edit_is_seen_by_every_gateway_process_without_restart(stack):
    second_port = stack.start_gateway()
    sockets = [await authed_socket(stack.url(), stack.api_key),
               await authed_socket(stack.url(second_port), stack.api_key)]
    make_route = ("from catalog.models import Deployment, Route, RouteCandidate; "
                  "r, _ = Route.objects.update_or_create(alias='best_available_general', org=None, "
                  "defaults={{'strategy': 'fallback'}}); r.candidates.all().delete(); "
                  "RouteCandidate.objects.create(route=r, deployment=Deployment.objects.get(name='{}', org=None))")
    request = {"type": "llm_request", "model": "best_available_general",
               "prompt": "x [[mock tokens=2 rate=0 ttft_ms=0]]"}
    for step, deployment in enumerate(("gpt-4-turbo", "claude-3-opus")):
        await asyncio.to_thread(stack.configure, make_route.format(deployment))
        for i, ws in enumerate(sockets):
            rid = f"route-{step}-{i}"
            await send_frame(ws, {**request, "request_id": rid})
            start = (await collect(ws))[rid][0]
            assert start["route"]["route"] == "best_available_general"
            assert start["route"]["deployment"] == deployment
    for ws in sockets:
        await ws.close()


async def test_a_breaker_opened_in_one_process_makes_another_skip_the_deployment(stack):
    require("redis")  # health is shared through Redis
    await asyncio.to_thread(define_route, stack, "shared_health", "fallback", [
        {"name": "flaky", "price": "1", "directives": "fault=503"},
        {"name": "steady", "price": "1", "directives": "rate=0 ttft_ms=0"}])
    second_port = stack.start_gateway()
    first = await authed_socket(stack.url(), stack.api_key)
    second = await authed_socket(stack.url(second_port), stack.api_key)
    await asyncio.sleep(1.5)  # both subscribed; route cache expired
    request = {"type": "llm_request", "model": "shared_health", "prompt": "x [[mock tokens=2]]"}
    for i in range(3):  # three failures of 'flaky' in the first process open its breaker
        await send_frame(first, {**request, "request_id": f"p1-{i}"})
        start = (await collect(first))[f"p1-{i}"][0]
        assert start["route"]["attempts"][0]["deployment"] == "flaky"
    await asyncio.sleep(0.5)
    await send_frame(second, {**request, "request_id": "p2"})
    start = (await collect(second))["p2"][0]
    assert start["route"]["deployment"] == "steady" and start["route"]["attempts"] == []
    for ws in (first, second):
        await ws.close()


async def test_a_concurrency_cap_is_counted_across_gateway_processes(stack):
    require("redis")  # in-flight counts are shared through Redis
    await asyncio.to_thread(define_route, stack, "capped_shared", "cost", [
        {"name": "cheap-single", "price": "1", "max_concurrency": 1},
        {"name": "pricier", "price": "5"}])
    second_port = stack.start_gateway()
    first = await authed_socket(stack.url(), stack.api_key)
    second = await authed_socket(stack.url(second_port), stack.api_key)
    await asyncio.sleep(1.2)
    await send_frame(first, {"type": "llm_request", "request_id": "holds", "model": "capped_shared",
                             "prompt": "x [[mock tokens=400 rate=50 ttft_ms=0]]"})
    start = await next_frame(first)
    assert start["route"]["deployment"] == "cheap-single"
    await send_frame(second, {"type": "llm_request", "request_id": "other", "model": "capped_shared",
                              "prompt": "y [[mock tokens=2 rate=0 ttft_ms=0]]"})
    frames = (await collect(second))["other"]
    assert frames[0]["route"]["deployment"] == "pricier" and frames[0]["route"]["attempts"] == []
    await send_frame(first, {"type": "cancel", "request_id": "holds"})
    for ws in (first, second):
        await ws.close()


async def test_a_burst_of_sockets_authenticating_at_once_is_served(stack):
    # More at once than redis-py's default pool of 100 connections (a reconnect storm).
    port = stack.start_gateway(OPENCLAW_MAX_CONNECTIONS_PER_KEY="1000")

    async def connect_and_auth():
        async with websockets.connect(stack.url(port)) as ws:
            await send_frame(ws, {"type": "auth", "token": stack.api_key})
            return (await next_frame(ws, timeout=30))["type"]

    results = await asyncio.gather(*(connect_and_auth() for _ in range(150)), return_exceptions=True)
    assert results.count("auth_ok") == 150, [r for r in results if r != "auth_ok"][:3]


async def test_connections_per_key_are_counted_across_gateway_processes(stack):
    require("redis")  # the count lives in Redis
    ports = [stack.start_gateway(OPENCLAW_MAX_CONNECTIONS_PER_KEY="2") for _ in range(2)]
    key = (await asyncio.to_thread(stack.manage, "create_api_key", "--org", "demo", "--name", "capped")).strip()
    first = await authed_socket(stack.url(ports[0]), key)
    await authed_socket(stack.url(ports[1]), key)
    # A third, in either process: accepted at the WebSocket level, then refused with a reason.
    third = await websockets.connect(stack.url(ports[0]))
    await send_frame(third, {"type": "auth", "token": key})
    frames, code = await wait_closed(third)
    assert code == 4429 and json.loads(frames[0])["code"] == 429, frames
    # Closing one frees its place for a connection to the other process.
    await first.close()
    deadline = time.monotonic() + 3
    while True:
        ws = await websockets.connect(stack.url(ports[1]))
        await send_frame(ws, {"type": "auth", "token": key})
        if (await next_frame(ws))["type"] == "auth_ok":
            break
        assert time.monotonic() < deadline, "the closed connection's place was never freed"
        await asyncio.sleep(0.2)


SUSPEND = {
    # The service an admin's action calls: a control message over the channel layer.
    "service": ("from tenants.models import Organization; from tenants.services import org_set_status; "
                "org_set_status(org=Organization.objects.get(slug='{slug}'), status='suspended')"),
    # A raw UPDATE (a script, a database console): caught by each process's re-check.
    "raw update": "from tenants.models import Organization; "
                  "Organization.objects.filter(slug='{slug}').update(status='suspended')",
}


@pytest.mark.parametrize("how", list(SUSPEND))
async def test_suspending_an_org_stops_its_streams_and_closes_its_sockets_in_every_process(stack, how):
    slug = "suspended-" + how.replace(" ", "-")
    await asyncio.to_thread(stack.manage, "create_org", slug)
    key = (await asyncio.to_thread(stack.manage, "create_api_key", "--org", slug)).strip()
    second_port = stack.start_gateway()
    streaming = await authed_socket(stack.url(), key)
    idle = await authed_socket(stack.url(second_port), key)
    await send_frame(streaming, {"type": "llm_request", "request_id": "doomed", "model": "gpt-4-turbo",
                                 "prompt": "long [[mock tokens=5000 rate=40 ttft_ms=0]]"})
    while (await next_frame(streaming))["type"] != "llm_token":
        pass
    await asyncio.to_thread(stack.manage, "shell", "-c", SUSPEND[how].format(slug=slug))
    committed = time.monotonic()
    for ws in (streaming, idle):
        frames, code = await wait_closed(ws)
        assert code == 4401, frames[-3:]
        assert any(json.loads(f).get("code") == 401 for f in frames), frames[-3:]
    assert time.monotonic() - committed < 1.5  # within a second, plus the test's own reading
    rows = stack.wait_for_rows("SELECT status, completion_tokens FROM billing_usagerecord "
                               "WHERE client_request_id = %s", ("doomed",))
    assert rows and rows[0][0] == "cancelled" and rows[0][1] > 0, rows
    # And the key cannot connect again while the org is suspended.
    refused = await websockets.connect(stack.url(second_port))
    await send_frame(refused, {"type": "auth", "token": key})
    _frames, code = await wait_closed(refused)
    assert code == 4401


async def test_the_server_pings_on_the_advertised_heartbeat_and_silence_never_closes(stack):
    import aiohttp

    port = stack.start_gateway(OPENCLAW_HEARTBEAT_SECONDS="1")
    async with aiohttp.ClientSession() as session:
        # autoping off: the client sees each ping the server sends, and answers it itself.
        async with session.ws_connect(stack.url(port), autoping=False, heartbeat=None) as ws:
            await ws.send_json({"type": "auth", "token": stack.api_key})
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "auth_ok" and hello["limits"]["heartbeat_seconds"] == 1, hello
            pings, started = 0, time.monotonic()
            while time.monotonic() - started < 4.5:  # no application message for several heartbeats
                message = await ws.receive(timeout=5)
                assert message.type == aiohttp.WSMsgType.PING, message
                pings += 1
                await ws.pong(message.data)
            assert pings >= 3, pings
            await ws.send_json({"type": "ping"})
            while (message := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.PING:
                await ws.pong(message.data)
            assert json.loads(message.data)["type"] == "pong"
