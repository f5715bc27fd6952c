"""The consumer over channels' WebsocketCommunicator, against the real mock LLM over HTTP."""
import asyncio
import json
import gc
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Awaitable, Callable

import pytest
from channels.testing import WebsocketCommunicator

from billing.models import UsageRecord
from billing.recorder import usage_recorder
from tests.support.consumer import authed, connect, usage_of
from tests.support.frames import collect, next_frame, send_frame, text_of

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def deployment(make_deployment):
    return make_deployment("mock-fast")  # $2.50 in / $10.00 out per million tokens


@pytest.fixture
def distinctive_limits(settings):
    """Values no default has, so an advertised limit that is not read from the settings shows."""
    settings.GATEWAY = {**settings.GATEWAY, "MAX_MESSAGE_BYTES": 54_321, "MAX_IN_FLIGHT": 7,
                        "MAX_CONNECTIONS_PER_KEY": 13, "AUTH_TIMEOUT_SECONDS": 9, "HEARTBEAT_SECONDS": 17}
    return settings.GATEWAY


async def test_auth_frame_gets_auth_ok_with_limits(issued_key, org, distinctive_limits):
    comm = await connect()
    await send_frame(comm, {"type": "auth", "token": issued_key.raw})
    ok = await next_frame(comm)
    assert ok == {"type": "auth_ok", "protocol": 1, "org": "acme", "key": issued_key.api_key.prefix,
                  "limits": ok["limits"]}
    assert issued_key.raw not in str(ok)
    # Exactly the limits docs/protocol.md lists, each the value the settings enforce.
    assert ok["limits"] == {
        "max_message_bytes": distinctive_limits["MAX_MESSAGE_BYTES"],
        "max_in_flight": distinctive_limits["MAX_IN_FLIGHT"],
        "max_connections_per_key": distinctive_limits["MAX_CONNECTIONS_PER_KEY"],
        "heartbeat_seconds": distinctive_limits["HEARTBEAT_SECONDS"],
        "auth_timeout_seconds": distinctive_limits["AUTH_TIMEOUT_SECONDS"],
    }
    await comm.disconnect()


async def test_a_request_before_auth_gets_401_and_the_socket_stays_open(issued_key):
    comm = await connect()
    await send_frame(comm, {"type": "llm_request", "request_id": "early", "model": "m", "prompt": "hi"})
    error = await next_frame(comm)
    assert (error["code"], error["request_id"]) == (401, "early")
    await send_frame(comm, {"type": "auth", "token": issued_key.raw})
    assert (await next_frame(comm))["type"] == "auth_ok"
    await comm.disconnect()


async def test_ping_gets_pong_before_and_after_auth(issued_key):
    comm = await connect()
    await send_frame(comm, {"type": "ping"})
    assert await next_frame(comm) == {"type": "pong"}
    await comm.disconnect()


async def test_a_request_right_after_auth_is_served_in_order(issued_key, deployment):
    comm = await connect()
    await send_frame(comm, {"type": "auth", "token": issued_key.raw})
    await send_frame(comm, {"type": "llm_request", "request_id": "r1", "model": "mock-fast",
                            "prompt": "hello [[mock tokens=5]]"})
    assert (await next_frame(comm))["type"] == "auth_ok"
    frames = (await collect(comm))["r1"]
    assert frames[-1]["type"] == "llm_response_end"
    await comm.disconnect()


async def test_it_streams_start_tokens_and_end_with_exact_cost(issued_key, org, deployment, mockllm):
    comm = await authed(issued_key)
    sent_at = time.monotonic()
    await send_frame(comm, {"type": "llm_request", "request_id": "r1", "model": "mock-fast",
                            "prompt": "Tell me a story [[mock tokens=12 tag=cost-test]]",
                            "parameters": {"max_tokens": 100, "temperature": 0.5},
                            "metadata": {"user_id": "user123", "priority": "normal"}})
    first_frame = await next_frame(comm)
    first_at = time.monotonic()
    frames = [first_frame, *(await collect(comm))["r1"]]
    ended_at = time.monotonic()
    start, tokens, end = frames[0], frames[1:-1], frames[-1]
    assert start["type"] == "llm_response_start" and start["model"] == "mock-fast"
    assert start["route"]["deployment"] == "mock-fast" and start["route"]["provider"] == "mock"
    assert start["max_tokens"] == 100 and start["truncated"] is False
    assert [t["seq"] for t in tokens] == list(range(12))
    assert all(t["content"] for t in tokens)
    assert end["finish_reason"] == "stop"
    usage = end["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12
    # Hand-computed: prompt_tokens * 2.50 / 1e6 + 12 * 10.00 / 1e6
    expected = Decimal(usage["prompt_tokens"]) * Decimal("2.5") / 10**6 + Decimal("0.00012")
    assert Decimal(end["cost_usd"]) == expected
    assert end["latency_ms"]["first_token"] <= end["latency_ms"]["total"]
    [sent] = mockllm.requests(tag="cost-test")  # called once
    assert sent["max_tokens"] == 100
    await comm.disconnect()

    record = await usage_of("r1")
    assert await UsageRecord.objects.filter(client_request_id="r1").acount() == 1
    # Who and what.
    assert (record.org_id, record.api_key_id) == (org.id, issued_key.api_key.id)
    assert record.client_request_id == "r1" and record.requested_model == "mock-fast"
    assert record.end_user == "user123"
    assert (record.deployment_id, record.deployment_name, record.provider) == (deployment.id, "mock-fast", "mock")
    assert record.route == start["route"] and record.via_route_id is None
    assert record.provider_response_id == sent["id"]  # the mock's own id for this completion
    # How it ended.
    assert (record.status, record.finish_reason, record.error_code) == ("completed", "stop", None)
    assert record.max_tokens == 100
    # Tokens and where they came from: the provider's own usage (the mock's count of the prompt).
    assert (record.prompt_tokens, record.completion_tokens) == (usage["prompt_tokens"], 12)
    assert record.prompt_tokens == sent["prompt_tokens"]
    assert record.prompt_tokens_source == "provider" and record.completion_tokens_source == "provider"
    # The prices applied (the deployment's; no rate card) and the exact cost.
    assert (record.input_price_per_mtok, record.output_price_per_mtok) == (Decimal("2.5"), Decimal("10"))
    assert record.cost_usd == expected
    # Timing: what the end frame said, within what the client measured around it.
    assert record.first_token_ms == end["latency_ms"]["first_token"]
    assert record.total_ms == end["latency_ms"]["total"]
    assert 0 <= record.first_token_ms <= record.total_ms
    assert record.first_token_ms <= (first_at - sent_at) * 1000 + 1
    assert record.total_ms <= (ended_at - sent_at) * 1000 + 1
    assert record.started_at <= record.ended_at


@pytest.fixture
def priced(make_deployment):
    return make_deployment("priced", input_price="3", output_price="15")


async def test_cost_matches_a_hand_computed_string(issued_key, priced):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "p", "model": "priced",
                            "messages": [{"role": "user", "content": "hi [[mock tokens=7]]"}]})
    end = (await collect(comm))["p"][-1]
    prompt = end["usage"]["prompt_tokens"]
    assert prompt == 14  # the mock's count of this exact prompt (cl100k, chat framing)
    # 14 * 3 / 1e6 + 7 * 15 / 1e6 = 0.000042 + 0.000105
    assert end["cost_usd"] == "0.000147"
    await comm.disconnect()


async def test_messages_and_system_prompt_reach_the_upstream(issued_key, deployment, mockllm):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "m", "model": "mock-fast", "system": "Be terse.",
                            "messages": [{"role": "user", "content": "Hi [[mock tag=msgs tokens=3]]"},
                                         {"role": "assistant", "content": "Hello."},
                                         {"role": "user", "content": "Again"}]})
    await collect(comm)
    sent = mockllm.requests(tag="msgs")[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[0]["content"] == "Be terse."
    await comm.disconnect()


async def test_max_tokens_cut_ends_with_finish_reason_length(issued_key, deployment):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "len", "model": "mock-fast",
                            "prompt": "go [[mock tokens=50]]", "parameters": {"max_tokens": 4}})
    frames = (await collect(comm))["len"]
    assert len([f for f in frames if f["type"] == "llm_token"]) == 4
    assert frames[-1]["finish_reason"] == "length"
    await comm.disconnect()
    assert (await usage_of("len")).status == "length"


async def test_stream_false_sends_exactly_one_token_frame(issued_key, deployment):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "ns", "model": "mock-fast",
                            "prompt": "whole [[mock tokens=9]]", "parameters": {"stream": False}})
    frames = (await collect(comm))["ns"]
    assert [f["type"] for f in frames] == ["llm_response_start", "llm_token", "llm_response_end"]
    assert frames[1]["seq"] == 0 and len(frames[1]["content"].split()) == 9
    await comm.disconnect()


async def test_several_requests_stream_concurrently_on_one_socket(issued_key, deployment):
    comm = await authed(issued_key)
    for rid in ("a", "b", "c"):
        await send_frame(comm, {"type": "llm_request", "request_id": rid, "model": "mock-fast",
                                "prompt": f"{rid} [[mock tokens=10 rate=20]]"})
    order = []
    by_request = {}
    while len([r for r in by_request.values() if r[-1]["type"] == "llm_response_end"]) < 3:
        frame = await next_frame(comm)
        order.append((frame["type"], frame["request_id"]))
        by_request.setdefault(frame["request_id"], []).append(frame)
    # All three were streaming at once: every start came before the first end.
    first_end = next(i for i, (kind, _) in enumerate(order) if kind == "llm_response_end")
    assert {rid for kind, rid in order[:first_end] if kind == "llm_response_start"} == {"a", "b", "c"}
    assert all(len(text_of(frames).split()) == 10 for frames in by_request.values())
    await comm.disconnect()


async def test_a_ping_is_answered_while_tokens_flow(issued_key, deployment):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "slow", "model": "mock-fast",
                            "prompt": "x [[mock tokens=30 rate=50]]"})
    assert (await next_frame(comm))["type"] == "llm_response_start"
    await send_frame(comm, {"type": "ping"})
    seen = []
    while True:
        frame = await next_frame(comm)
        seen.append(frame["type"])
        if frame["type"] == "pong":
            break
    assert "llm_response_end" not in seen
    await collect(comm)
    await comm.disconnect()


async def test_when_the_provider_omits_usage_the_gateway_counts_tokens(issued_key, deployment):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "nu", "model": "mock-fast",
                            "prompt": "count me [[mock tokens=8 usage=omit]]"})
    end = (await collect(comm))["nu"][-1]
    assert end["usage"]["completion_tokens"] > 0
    await comm.disconnect()
    record = await usage_of("nu")
    assert record.completion_tokens_source == "counted" and record.prompt_tokens_source == "counted"
    assert record.completion_tokens == end["usage"]["completion_tokens"]
    assert record.cost_usd > 0


@pytest.mark.parametrize("frame,code,fragment", [
    ({"type": "llm_request", "request_id": "x", "model": "nope", "prompt": "hi"}, 404, "unknown model"),
    ({"type": "llm_request", "request_id": "x", "model": "mock-fast", "prompt": "hi", "session_id": "s"}, 400,
     "sessions not enabled"),
    ({"type": "llm_request", "request_id": "x", "model": "mock-fast"}, 400, "prompt"),
    ({"type": "dance", "request_id": "x"}, 400, "unknown frame type"),
])
async def test_bad_requests_get_an_error_and_the_socket_stays_usable(issued_key, deployment, frame, code, fragment):
    comm = await authed(issued_key)
    await send_frame(comm, frame)
    error = await next_frame(comm)
    assert error["type"] == "error" and error["code"] == code and fragment in error["message"]
    assert error["request_id"] == "x"
    await send_frame(comm, {"type": "ping"})
    assert (await next_frame(comm))["type"] == "pong"
    await comm.disconnect()


@pytest.fixture
def limited_key(org, deployment, make_deployment):
    from tenants.services import api_key_create

    make_deployment("premium")
    return api_key_create(org=org, name="limited", allowed_models=["mock-fast"])


async def test_a_model_outside_the_keys_allow_list_is_403(limited_key):
    issued = limited_key
    comm = await authed(issued)
    await send_frame(comm, {"type": "llm_request", "request_id": "f", "model": "premium", "prompt": "hi"})
    error = await next_frame(comm)
    assert (error["code"], error["error"]) == (403, "forbidden")
    await comm.disconnect()
    record = await usage_of("f")
    assert record.status == "rejected" and record.error_code == 403 and record.cost_usd == 0


async def test_not_json_and_binary_frames_get_400(issued_key):
    comm = await authed(issued_key)
    await comm.send_to(text_data="{not json")
    assert (await next_frame(comm))["code"] == 400
    await comm.send_to(bytes_data=b"\x00\x01")
    error = await next_frame(comm)
    assert error["code"] == 400 and "binary" in error["message"]
    await comm.disconnect()


async def test_a_duplicate_request_id_in_flight_is_409(issued_key, deployment):
    comm = await authed(issued_key)
    request = {"type": "llm_request", "request_id": "dup", "model": "mock-fast",
               "prompt": "x [[mock tokens=20 rate=40]]"}
    await send_frame(comm, request)
    await send_frame(comm, request)
    frames = []
    while not any(f["type"] == "llm_response_end" for f in frames):
        frames.append(await next_frame(comm))
    conflicts = [f for f in frames if f["type"] == "error"]
    assert len(conflicts) == 1 and conflicts[0]["code"] == 409
    await comm.disconnect()


async def test_an_upstream_500_is_a_502_without_the_upstreams_text(issued_key, deployment):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "u", "model": "mock-fast",
                            "prompt": "x [[mock fault=500]]"})
    error = await next_frame(comm)
    assert (error["type"], error["code"], error["error"]) == ("error", 502, "upstream_error")
    assert "sk-mock" not in error["message"] and "LEAKED" not in error["message"]
    await comm.disconnect()
    record = await usage_of("u")
    assert record.status == "upstream_error" and record.error_code == 502


async def test_cancel_ends_the_request_with_cancelled_and_partial_usage(issued_key, deployment):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "c", "model": "mock-fast",
                            "prompt": "x [[mock tokens=2000 rate=50]]"})
    while (await next_frame(comm))["type"] != "llm_token":
        pass
    await send_frame(comm, {"type": "cancel", "request_id": "c"})
    frames = (await collect(comm))["c"]
    end = frames[-1]
    assert end["type"] == "llm_response_end" and end["finish_reason"] == "cancelled", end
    assert 0 < end["usage"]["completion_tokens"] < 2000
    await send_frame(comm, {"type": "cancel", "request_id": "c"})
    error = await next_frame(comm)
    assert error["code"] == 404 and "request_id" not in error
    await comm.disconnect()
    assert (await usage_of("c")).status == "cancelled"


async def test_cancel_of_a_request_that_never_existed_is_404_without_request_id(issued_key, deployment):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "cancel", "request_id": "never-sent"})
    error = await next_frame(comm)
    assert (error["type"], error["code"], error["error"], error["retryable"]) == ("error", 404, "not_found", False)
    assert "request_id" not in error and "never-sent" in error["message"]
    # Nothing was started by it, and the socket stays usable.
    await send_frame(comm, {"type": "ping"})
    assert await next_frame(comm) == {"type": "pong"}
    await comm.disconnect()
    assert await usage_recorder.flush(timeout=10)
    assert not await UsageRecord.objects.aexists()


@pytest.fixture
def impatient(make_deployment):
    return make_deployment("impatient", first_token_timeout_ms=300)


async def test_a_hung_upstream_times_out_with_504_and_is_closed(issued_key, impatient, mockllm):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "h", "model": "impatient",
                            "prompt": "x [[mock fault=hang tag=hang-504]]"})
    error = await next_frame(comm)
    assert (error["code"], error["error"], error["retryable"]) == (504, "upstream_timeout", True)
    await comm.disconnect()
    record = mockllm.wait_for_event("hang-504", lambda r: r["client_gone_at"] is not None, timeout=5)
    assert record["outcome"] == "hung_client_gone"
    assert (await usage_of("h")).status == "upstream_timeout"


async def test_litellm_does_not_retry_a_failed_upstream_call_on_its_own(issued_key, deployment, mockllm):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "once", "model": "mock-fast",
                            "prompt": "x [[mock fault=500 tag=no-litellm-retry]]"})
    error = await next_frame(comm)
    assert (error["type"], error["code"], error["request_id"]) == ("error", 502, "once")
    await asyncio.sleep(0.5)  # room for a retry that litellm or the OpenAI client might still send
    calls = mockllm.requests(tag="no-litellm-retry")
    assert len(calls) == 1, f"the upstream was called {len(calls)} times"
    assert calls[0]["status"] == 500
    await comm.disconnect()
    assert (await usage_of("once")).status == "upstream_error"


@pytest.fixture
def drowsy(make_deployment):
    return make_deployment("drowsy", idle_timeout_ms=300)  # first-token timeout stays at its default 30 s


async def test_a_stream_that_stalls_past_the_idle_timeout_ends_with_504_and_is_closed(issued_key, drowsy, mockllm):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "idle", "model": "drowsy",
                            "prompt": "x [[mock tokens=50 stall stall_after=3 tag=idle-504]]"})
    frames, arrivals = [], []
    while not frames or frames[-1]["type"] not in ("llm_response_end", "error"):
        frames.append(await next_frame(comm))
        arrivals.append((time.monotonic(), time.time()))
    assert [f["type"] for f in frames] == ["llm_response_start"] + ["llm_token"] * 3 + ["error"], frames
    error = frames[-1]
    # Tokens were sent, so the client must not simply retry the request.
    assert (error["code"], error["error"], error["request_id"], error["retryable"]) == (
        504, "upstream_timeout", "idle", False)
    stalled_for = arrivals[-1][0] - arrivals[-2][0]
    # Loose bounds: arrival times carry the test loop's own jitter on a busy machine
    # (the third token can reach the client late, shortening the gap seen here).
    assert 0.2 <= stalled_for < 2, f"the 300 ms idle timeout fired after {stalled_for:.3f}s"
    await comm.disconnect()
    record = mockllm.wait_for_event("idle-504", lambda r: r["client_gone_at"] is not None, timeout=5)
    assert record["outcome"] == "hung_client_gone" and record["chunks_sent"] == 3
    assert record["client_gone_at"] - arrivals[-1][1] < 0.2  # closed with the error, not later
    usage = await usage_of("idle")
    assert (usage.status, usage.error_code, usage.finish_reason) == ("upstream_timeout", 504, "error")
    assert usage.deployment_name == "drowsy"
    # The tokens received are billed, counted by the gateway (the provider never sent usage).
    assert usage.completion_tokens > 0 and usage.completion_tokens_source == "counted"
    assert usage.cost_usd > 0


@pytest.fixture
def tight_limits(settings):
    settings.GATEWAY = {**settings.GATEWAY, "MAX_MESSAGE_BYTES": 2048, "MAX_IN_FLIGHT": 2, "AUTH_TIMEOUT_SECONDS": 1}
    return settings.GATEWAY


async def test_a_frame_over_the_limit_gets_413_and_close_4413(issued_key, tight_limits):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "model": "m", "prompt": "x" * 4096})
    error = await next_frame(comm)
    assert (error["code"], error["error"]) == (413, "frame_too_large") and "2048" in error["message"]
    assert (await comm.receive_output(timeout=5))["code"] == 4413


async def test_no_auth_within_the_advertised_time_closes_4408(tight_limits):
    comm = await connect()
    error = await next_frame(comm, timeout=5)
    assert error["code"] == 401 and "time" in error["message"]
    assert (await comm.receive_output(timeout=5))["code"] == 4408


async def test_more_requests_in_flight_than_advertised_get_429(issued_key, deployment, tight_limits):
    comm = await authed(issued_key)
    for rid in ("1", "2", "3"):
        await send_frame(comm, {"type": "llm_request", "request_id": rid, "model": "mock-fast",
                                "prompt": "x [[mock tokens=10 rate=20]]"})
    error = await next_frame(comm)
    while error["type"] != "error":
        error = await next_frame(comm)
    assert (error["code"], error["request_id"], error["retryable"]) == (429, "3", True)
    assert error["retry_after_ms"] > 0
    await comm.disconnect()


@pytest.fixture
def disabled(make_deployment):
    return make_deployment("resting", enabled=False)


async def test_a_disabled_deployment_gets_503(issued_key, disabled):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "d", "model": "resting", "prompt": "hi"})
    error = await next_frame(comm)
    assert (error["code"], error["error"], error["retryable"]) == (503, "no_healthy_deployment", True)
    await comm.disconnect()


@dataclass
class Rejection:
    key: object  # the issued key to authenticate with
    code: int
    error: str
    request: dict  # fields of the llm_request that get it refused
    prelude: Callable[[WebsocketCommunicator], Awaitable[None]] | None = None  # run after auth


async def fresh_minute(margin: float = 8.0) -> None:
    """Start early in a UTC minute, so a per-minute limit cannot reset halfway."""
    into = time.time() % 60
    if into > 60 - margin:
        await asyncio.sleep(60 - into + 0.05)


REJECTIONS = ["400-session", "402-budget", "403-not-allowed", "404-unknown-model", "429-key-rpm",
              "429-in-flight", "503-disabled", "503-draining"]


@pytest.fixture(params=REJECTIONS)
def rejection(request, org, issued_key, deployment, make_deployment, settings, monkeypatch):
    """Each way a request is refused before any upstream call, set up in the database."""
    kind = request.param
    if kind == "400-session":
        return Rejection(issued_key, 400, "bad_request", {"session_id": "s1"})
    if kind == "402-budget":
        from billing.models import Budget

        # max_tokens 1000 at $10/M is $0.01 of output alone: more than the whole budget.
        Budget.objects.create(org=org, name="tiny", window="day", limit_usd=Decimal("0.005"))
        return Rejection(issued_key, 402, "budget_exhausted", {"parameters": {"max_tokens": 1000}})
    if kind == "403-not-allowed":
        from tenants.services import api_key_create

        make_deployment("premium")
        limited = api_key_create(org=org, name="limited", allowed_models=["mock-fast"])
        return Rejection(limited, 403, "forbidden", {"model": "premium"})
    if kind == "404-unknown-model":
        return Rejection(issued_key, 404, "not_found", {"model": "nope"})
    if kind == "429-key-rpm":
        issued_key.api_key.rpm_limit = 1
        issued_key.api_key.save()

        async def use_the_minutes_request(comm):
            await fresh_minute()
            await send_frame(comm, {"type": "llm_request", "request_id": "first", "model": "mock-fast",
                                    "prompt": "hi [[mock tokens=2]]"})
            assert (await collect(comm))["first"][-1]["type"] == "llm_response_end"

        return Rejection(issued_key, 429, "rate_limited", {}, use_the_minutes_request)
    if kind == "429-in-flight":
        settings.GATEWAY = {**settings.GATEWAY, "MAX_IN_FLIGHT": 1}

        async def fill_the_socket(comm):
            await send_frame(comm, {"type": "llm_request", "request_id": "hold", "model": "mock-fast",
                                    "prompt": "hold [[mock tokens=2000 rate=50]]"})
            while (await next_frame(comm))["type"] != "llm_token":
                pass

        return Rejection(issued_key, 429, "rate_limited", {}, fill_the_socket)
    if kind == "503-disabled":
        make_deployment("resting", enabled=False)
        return Rejection(issued_key, 503, "no_healthy_deployment", {"model": "resting"})
    if kind == "503-draining":
        from gateway import lifecycle

        async def start_draining(comm):
            monkeypatch.setattr(lifecycle, "draining", True)

        return Rejection(issued_key, 503, "no_healthy_deployment", {}, start_draining)
    raise AssertionError(kind)


async def test_a_request_rejected_before_upstream_leaves_one_record_with_zero_tokens(rejection, mockllm, request):
    tag = f"rejected-{request.node.callspec.id}"
    comm = await authed(rejection.key)
    if rejection.prelude:
        await rejection.prelude(comm)
    await send_frame(comm, {"type": "llm_request", "request_id": "x", "model": "mock-fast",
                            "prompt": f"hello [[mock tokens=3 tag={tag}]]", **rejection.request})
    frame = await next_frame(comm)
    while frame.get("request_id") != "x":  # another request's tokens (429-in-flight)
        frame = await next_frame(comm)
    assert (frame["type"], frame["code"], frame["error"]) == ("error", rejection.code, rejection.error), frame
    await comm.disconnect()
    assert mockllm.requests(tag=tag) == []  # no upstream call was made
    assert await usage_recorder.flush(timeout=10)
    records = [r async for r in UsageRecord.objects.filter(client_request_id="x")]
    assert len(records) == 1, f"{len(records)} usage records for the rejected request"
    [record] = records
    assert (record.status, record.error_code) == ("rejected", rejection.code)
    assert (record.prompt_tokens, record.completion_tokens, record.cost_usd) == (0, 0, 0)
    assert (record.prompt_tokens_source, record.completion_tokens_source) == ("none", "none")
    assert record.deployment_id is None and record.provider_response_id == ""
    assert (record.org_id, record.api_key_id) == (rejection.key.api_key.org_id, rejection.key.api_key.id)
    assert record.requested_model == rejection.request.get("model", "mock-fast")


async def test_cancel_closes_the_upstream_stream_within_200ms(issued_key, deployment, mockllm):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "cu", "model": "mock-fast",
                            "prompt": "x [[mock tokens=2000 rate=50 tag=cancel-upstream]]"})
    while (await next_frame(comm))["type"] != "llm_token":
        pass
    cancelled_at = time.time()
    await send_frame(comm, {"type": "cancel", "request_id": "cu"})
    await collect(comm)
    record = mockllm.wait_for_event("cancel-upstream", lambda r: r["client_gone_at"] is not None, timeout=5)
    assert record["outcome"] == "client_gone"
    assert record["client_gone_at"] - cancelled_at < 0.2
    await comm.disconnect()


async def test_disconnect_stops_every_request_and_closes_upstream_within_200ms(issued_key, deployment, mockllm):
    comm = await authed(issued_key)
    for rid in ("g1", "g2"):
        await send_frame(comm, {"type": "llm_request", "request_id": rid, "model": "mock-fast",
                                "prompt": f"{rid} [[mock tokens=2000 rate=50 tag=gone-{rid}]]"})
    started = set()
    while started != {"g1", "g2"}:
        frame = await next_frame(comm)
        if frame["type"] == "llm_token":
            started.add(frame["request_id"])
    gone_at = time.time()
    await comm.disconnect()
    for rid in ("g1", "g2"):
        record = mockllm.wait_for_event(f"gone-{rid}", lambda r: r["client_gone_at"] is not None, timeout=5)
        assert record["client_gone_at"] - gone_at < 0.2
        usage = await usage_of(rid)
        assert usage.status == "client_gone" and usage.completion_tokens > 0 and usage.cost_usd > 0


async def test_an_internal_error_is_a_500_that_reveals_nothing(issued_key, deployment, monkeypatch):
    import gateway.pipeline

    async def broken(*args, **kwargs):
        raise RuntimeError("database password is hunter2")

    monkeypatch.setattr(gateway.pipeline, "count_prompt_tokens", broken)
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "boom", "model": "mock-fast", "prompt": "hi"})
    error = await next_frame(comm)
    assert (error["code"], error["error"], error["request_id"]) == (500, "internal_error", "boom")
    assert "hunter2" not in error["message"] and "RuntimeError" not in error["message"]
    await send_frame(comm, {"type": "ping"})
    assert (await next_frame(comm))["type"] == "pong"
    await comm.disconnect()
    assert (await usage_of("boom")).status == "internal_error"


@pytest.fixture
def frozen_heap():
    """A full garbage collection of this process's heap (litellm's import alone is
    some 440,000 objects) stops the event loop for about 0.4 s, whatever the usage
    writer does. Collect and freeze what exists, so a timing test measures only
    the behaviour it is about."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


async def test_a_slow_usage_write_never_delays_another_stream(issued_key, deployment, monkeypatch, frozen_heap):
    """Issue 3: with a 2-second delay injected into usage writes, a concurrent
    stream's gaps between tokens stay under 100 ms and no record is lost."""
    import billing.recorder

    real_write = billing.recorder._write_batch
    writes_started = []

    def slow_write(books, drafts):
        writes_started.append(time.monotonic())
        time.sleep(2)
        real_write(books, drafts)

    monkeypatch.setattr(billing.recorder, "_write_batch", slow_write)
    comm = await authed(issued_key)
    # 150 tokens, one every 20 ms: 3 s of streaming.
    await send_frame(comm, {"type": "llm_request", "request_id": "long", "model": "mock-fast",
                            "prompt": "x [[mock tokens=150 rate=50]]"})
    # Short requests end, and are written slowly, while "long" streams. They are
    # spread over its first two seconds: each one's own setup takes some CPU, and
    # five at once would open a gap that has nothing to do with usage writes.
    shorts = {10: "short0", 40: "short1", 70: "short2", 100: "short3"}
    tokens_at = []
    ended = set()
    while True:
        frame = await next_frame(comm)
        if frame["type"] in ("llm_response_end", "error"):
            ended.add(frame["request_id"])
        if frame.get("request_id") != "long":
            continue
        if frame["type"] == "llm_token":
            tokens_at.append(time.monotonic())
            if len(tokens_at) in shorts:
                await send_frame(comm, {"type": "llm_request", "request_id": shorts[len(tokens_at)],
                                        "model": "mock-fast", "prompt": "y [[mock tokens=2]]"})
        elif frame["type"] != "llm_response_start":
            assert frame["type"] == "llm_response_end", frame
            break
    assert len(tokens_at) == 150
    # A 2 s write really was under way while "long" streamed (else this proves nothing).
    assert writes_started and tokens_at[0] < writes_started[0] and writes_started[0] + 2 < tokens_at[-1]
    gaps = [b - a for a, b in zip(tokens_at, tokens_at[1:])]
    # Tokens come every 20 ms; a write on the token path would open a 2 s gap.
    assert max(gaps) < 0.1, f"largest gap between tokens {max(gaps) * 1000:.0f} ms"
    while len(ended) < 5:  # the last short may still be running
        frame = await next_frame(comm)
        if frame["type"] in ("llm_response_end", "error"):
            ended.add(frame["request_id"])
    await comm.disconnect()
    assert await usage_recorder.flush(timeout=30)
    # No record lost: exactly one each, every one completed.
    ids = ["long", *shorts.values()]
    assert ended == set(ids)
    rows = [(r.client_request_id, r.status) async for r in UsageRecord.objects.filter(client_request_id__in=ids)]
    assert sorted(rows) == sorted((rid, "completed") for rid in ids)
    assert await UsageRecord.objects.acount() == len(ids)


# --- Bad text and failures while handling frames (docs/protocol.md, "Text") ------------

async def test_a_lone_surrogate_before_auth_is_a_400_and_the_socket_stays_usable(issued_key, settings):
    """It used to crash the connection (1011) and leak the key's connection slot."""
    settings.GATEWAY = {**settings.GATEWAY, "MAX_CONNECTIONS_PER_KEY": 1}
    for _ in range(3):  # the single slot is given back every time
        comm = await connect()
        await comm.send_to(text_data='{"type":"cancel","request_id":"\\ud800"}')
        error = await next_frame(comm)
        assert error["code"] == 400 and error["message"].startswith("request_id: must not contain a lone surrogate")
        assert "request_id" not in error
        await send_frame(comm, {"type": "auth", "token": issued_key.raw})
        assert (await next_frame(comm))["type"] == "auth_ok"
        await comm.send_to(text_data='{"type":"llm_request","model":"mock-fast","prompt":"hi",'
                                     '"metadata":{"user_id":"bob\\u0000"}}')
        error = await next_frame(comm)
        assert error["code"] == 400 and error["message"] == "metadata.user_id: must not contain NUL (U+0000)"
        await comm.disconnect()


async def test_a_failure_handling_one_frame_is_a_500_and_the_connection_stays(issued_key, deployment, monkeypatch):
    from gateway.consumers import GatewayConsumer

    async def broken(self, frame):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(GatewayConsumer, "on_cancel", broken)
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "cancel", "request_id": "c1"})
    error = await next_frame(comm)
    assert error == {"type": "error", "request_id": "c1", "code": 500, "error": "internal_error",
                     "message": "internal error; the frame was not handled", "retryable": True}
    await send_frame(comm, {"type": "ping"})
    assert (await next_frame(comm))["type"] == "pong"
    await comm.disconnect()


async def test_a_failure_while_authenticating_closes_1011_and_gives_the_slot_back(issued_key, settings, monkeypatch):
    from channels.layers import get_channel_layer

    settings.GATEWAY = {**settings.GATEWAY, "MAX_CONNECTIONS_PER_KEY": 1}
    layer = get_channel_layer()
    real_group_add = layer.group_add

    async def broken_group_add(group, channel):
        raise ConnectionError("channel layer down")

    monkeypatch.setattr(layer, "group_add", broken_group_add)
    comm = await connect()
    await send_frame(comm, {"type": "auth", "token": issued_key.raw})
    error = await next_frame(comm)
    assert error["code"] == 500 and error["retryable"] is True and "channel layer" not in error["message"]
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 1011}
    monkeypatch.setattr(layer, "group_add", real_group_add)
    comm = await authed(issued_key)  # the only slot was given back
    await comm.disconnect()


async def test_a_connection_that_fails_stops_its_streams_upstream_and_bills_them(issued_key, deployment, settings,
                                                                                 mockllm, monkeypatch):
    """Whatever escapes frame handling, the connection releases what it held: its
    streams are stopped upstream and billed for what was produced, its slot freed."""
    from gateway.consumers import GatewayConsumer

    settings.GATEWAY = {**settings.GATEWAY, "MAX_CONNECTIONS_PER_KEY": 1}
    real_receive = GatewayConsumer.receive

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "boom":
            raise RuntimeError("a bug")
        await real_receive(self, text_data=text_data, bytes_data=bytes_data)

    monkeypatch.setattr(GatewayConsumer, "receive", receive)
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "crash", "model": "mock-fast",
                            "prompt": "x [[mock tokens=2000 rate=50 tag=crash-upstream]]"})
    while (await next_frame(comm))["type"] != "llm_token":
        pass
    failed_at = time.time()
    await comm.send_to(text_data="boom")
    frames = []
    while (output := await comm.receive_output(timeout=5))["type"] != "websocket.close":
        frames.append(json.loads(output["text"]))
    assert output["code"] == 1011
    assert frames[-1] == {"type": "error", "code": 500, "error": "internal_error",
                          "message": "internal error; the connection is closed, reconnect", "retryable": True}
    # (on a thread: the connection's release runs on this event loop)
    record = await asyncio.to_thread(mockllm.wait_for_event, "crash-upstream",
                                     lambda r: r["client_gone_at"] is not None, timeout=5)
    assert record["client_gone_at"] - failed_at < 0.5
    usage = await usage_of("crash")
    assert usage.status == "client_gone" and usage.completion_tokens > 0 and usage.cost_usd > 0
    comm = await authed(issued_key)  # the only slot was given back
    await comm.disconnect()


async def test_a_send_to_a_socket_that_just_closed_is_the_client_going_away_not_an_error(
        issued_key, deployment, monkeypatch):
    """Between the client's close and the server's disconnect event, daphne's WebSocket
    engine refuses sends (`Disconnected`): the request is billed as client_gone, not
    internal_error (which once made an end-to-end test flaky on a busy machine)."""
    from autobahn.exception import Disconnected

    from gateway.consumers import GatewayConsumer

    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "closing", "model": "mock-fast",
                            "prompt": "x [[mock tokens=2000 rate=100]]"})
    while (await next_frame(comm))["type"] != "llm_token":
        pass

    async def closed_socket(self, text_data=None, bytes_data=None, close=False, push=False):
        raise Disconnected("Attempt to send on a closed protocol")

    monkeypatch.setattr(GatewayConsumer, "send", closed_socket)
    await asyncio.sleep(0.2)  # tokens keep coming upstream; their frames cannot be sent
    await comm.disconnect()
    usage = await usage_of("closing")
    assert usage.status == "client_gone" and usage.completion_tokens > 0 and usage.cost_usd > 0


async def test_frames_are_handled_without_a_thread_hop_per_message(issued_key, deployment, monkeypatch):
    """channels' own dispatch runs close_old_connections on its thread-sensitive executor
    before every message; the consumer's dispatch does not (its database work checks
    its own connections), and frames are still handled."""
    import channels.consumer

    hops = []

    async def counted():
        hops.append(1)

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "ping"})
    assert await next_frame(comm) == {"type": "pong"}
    await send_frame(comm, {"type": "llm_request", "request_id": "no-hop", "model": "mock-fast",
                            "prompt": "hi [[mock tokens=3 rate=0]]"})
    assert (await collect(comm))["no-hop"][-1]["type"] == "llm_response_end"
    assert hops == []
    await comm.disconnect()


async def test_the_first_token_of_each_response_and_only_it_asks_to_be_pushed_out(issued_key, deployment):
    """The first llm_token's ASGI message carries infra.asgi_push.PUSH (the server writes it
    to the socket at once); every other frame is left to the server's usual batching."""
    from infra.asgi_push import PUSH

    comm = await authed(issued_key)
    messages = []
    for request_id, stream in (("pushed-1", True), ("pushed-2", True), ("whole", False)):
        await send_frame(comm, {"type": "llm_request", "request_id": request_id, "model": "mock-fast",
                                "prompt": "hi [[mock tokens=4 rate=0]]", "parameters": {"stream": stream}})
        while True:
            message = await comm.receive_output(timeout=10)
            messages.append((json.loads(message["text"]), message.get(PUSH, False)))
            if messages[-1][0]["type"] in ("llm_response_end", "error"):
                break
    pushed = [(frame["request_id"], frame["type"], frame["seq"]) for frame, push in messages if push]
    assert pushed == [("pushed-1", "llm_token", 0), ("pushed-2", "llm_token", 0), ("whole", "llm_token", 0)]
    assert sum(frame["type"] == "llm_token" for frame, _ in messages) == 4 + 4 + 1
    await comm.disconnect()
