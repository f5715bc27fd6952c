"""The lean streaming path (gateway/providers.py) is equivalent to litellm's stream
wrapper: the same requests, through the consumer and the whole pipeline against the
real mock LLM over HTTP, once read by the lean read and once by litellm, must give the
same frames (types, text, finish reason, usage, cost, error codes and messages), the same
usage records (status, tokens and their sources, cost to the exact Decimal) and the same
requests upstream (every parameter the mock received, how many requests, how each ended).

Only timings and ids may differ. Each case runs its two paths back to back on one
socket; the mock's text depends only on the messages, so both see the same tokens."""
from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

import gateway.providers as providers
from billing.models import UsageRecord
from tests.support.consumer import ask, authed, usage_of

consumer = pytest.mark.django_db(transaction=True)

FAST = dict(first_token_timeout_ms=5_000, idle_timeout_ms=5_000)
SHORT = dict(first_token_timeout_ms=400, idle_timeout_ms=400)
# litellm passes on this many equal chunks in a row and fails the stream at the next one.
REPEAT_LIMIT = providers.litellm.REPEATED_STREAMING_CHUNK_LIMIT

# (case, prompt directives, llm_request parameters, deployment timeouts)
CASES = [
    ("normal", "tokens=50", {}, FAST),
    ("one-token", "tokens=1", {}, FAST),
    ("empty", "tokens=0", {}, FAST),
    ("no-usage", "tokens=20 no_usage", {}, FAST),
    ("length", "tokens=50", {"max_tokens": 12}, FAST),
    ("length-no-usage", "tokens=50 no_usage", {"max_tokens": 12}, FAST),
    ("overrun", "tokens=30 overrun", {"max_tokens": 8}, FAST),
    ("parameters", "tokens=10", {"max_tokens": 40, "temperature": 0.3, "top_p": 0.9, "stop": ["zzz"], "seed": 7,
                                 "presence_penalty": 0.5, "frequency_penalty": 0.25}, FAST),
    ("not-streamed", "tokens=15", {"stream": False}, FAST),
    ("cut", "tokens=50 fault=cut cut_after=7", {}, FAST),
    ("cut-before-first", "tokens=50 fault=cut cut_after=0", {}, FAST),
    ("error-event", "tokens=50 fault=stream_error cut_after=5", {}, FAST),
    ("error-event-first", "tokens=50 fault=stream_error cut_after=0", {}, FAST),
    ("http-500", "fault=500", {}, FAST),
    ("http-503", "fault=503", {}, FAST),
    ("http-429", "fault=429 retry_after=3", {}, FAST),
    ("http-400", "fault=400", {}, FAST),
    ("http-413", "fault=413", {}, FAST),
    ("http-422", "fault=422", {}, FAST),
    ("first-token-timeout", "fault=hang", {}, SHORT),
    ("slow-first-token", "tokens=5 ttft_ms=1500", {}, SHORT),
    ("idle-timeout", "tokens=50 fault=stall stall_after=4", {}, SHORT),
    # Ends cleanly ([DONE]) without a finish reason: litellm fails it once it saw a chunk...
    ("no-finish", "tokens=20 no_finish", {}, FAST),
    ("no-finish-no-usage", "tokens=20 no_finish no_usage", {}, FAST),
    ("no-finish-usage-only", "tokens=0 no_finish", {}, FAST),
    ("no-finish-length", "tokens=50 no_finish", {"max_tokens": 12}, FAST),
    # ...and takes a stream of nothing but [DONE] for an empty answer that stopped.
    ("no-chunks", "tokens=0 no_finish no_usage", {}, FAST),
    # The same chunk again and again: up to the limit passed on, one more fails the stream.
    ("repeat-at-limit", f"tokens={REPEAT_LIMIT} repeat", {}, FAST),
    ("repeat-past-limit", f"tokens={REPEAT_LIMIT + 1} repeat", {}, FAST),
    # A provider's own finish reason saying generation failed: litellm fails the stream.
    ("finish-abort", "tokens=20 fault=finish_abort", {}, FAST),
    ("finish-error", "tokens=20 fault=finish_error", {}, FAST),
    ("finish-error-empty", "tokens=0 fault=finish_error no_usage", {}, FAST),
]


@pytest.fixture
def path_taken(monkeypatch):
    """Which reader each stream used: "lean" or "litellm", in order."""
    taken: list[str] = []
    lean, full = providers.UpstreamStream._iterate_events, providers.UpstreamStream._iterate_deltas

    def spy(name, reader):
        def read(self):
            taken.append(name)
            return reader(self)
        return read

    monkeypatch.setattr(providers.UpstreamStream, "_iterate_events", spy("lean", lean))
    monkeypatch.setattr(providers.UpstreamStream, "_iterate_deltas", spy("litellm", full))
    return taken


def comparable_frames(frames: list[dict]) -> list[dict]:
    """The frames without what may differ between two runs (ids, timings)."""
    out = []
    for frame in frames:
        frame = {k: v for k, v in frame.items() if k not in ("request_id", "latency_ms")}
        out.append(frame)
    return out


USAGE_FIELDS = ("status", "finish_reason", "error_code", "prompt_tokens", "prompt_tokens_source", "completion_tokens",
                "completion_tokens_source", "cost_usd", "input_price_per_mtok", "output_price_per_mtok", "max_tokens",
                "deployment_name", "provider", "route")


def comparable_usage(record: UsageRecord) -> dict:
    values = {name: getattr(record, name) for name in USAGE_FIELDS}
    # The provider's id differs per request; whether there is one must not.
    values["provider_response_id"] = record.provider_response_id.startswith("chatcmpl-mock-")
    return values


def comparable_upstream(records: list[dict]) -> list[dict]:
    keep = ("model", "stream", "max_tokens", "params", "status", "outcome", "chunks_sent", "finish_reason",
            "usage_sent", "prompt_tokens", "messages")
    return [{k: r[k] for k in keep} for r in records]


async def run_both(comm, mockllm, settings, name: str, prompt: str, parameters: dict, model: str):
    """The request once through each path: {path: (frames, usage, upstream requests)}."""
    seen = {}
    for path, lean in (("lean", True), ("litellm", False)):
        settings.GATEWAY = {**settings.GATEWAY, "LEAN_STREAM": lean}
        mockllm.clear()
        rid = f"{name}-{path}"
        frames = await ask(comm, rid, prompt, model=model, **({"parameters": parameters} if parameters else {}))
        record = await usage_of(rid)
        # A stream the gateway stopped (overrun, timeouts) is noticed by the mock shortly after.
        upstream = mockllm.requests()
        if any(r["outcome"] is None for r in upstream):
            mockllm.wait_for_event(None, lambda r: r["outcome"] is not None and r["ended_at"], timeout=5)
            upstream = mockllm.requests()
        seen[path] = (comparable_frames(frames), comparable_usage(record), comparable_upstream(upstream))
    return seen


@consumer
@pytest.mark.parametrize("name, directives, parameters, timeouts", CASES, ids=[c[0] for c in CASES])
async def test_the_lean_read_and_litellms_give_the_same_frames_usage_and_upstream_requests(
        name, directives, parameters, timeouts, issued_key, make_deployment, mockllm, settings, path_taken):
    await sync_to_async(make_deployment)("diff", **timeouts)
    comm = await authed(issued_key)
    seen = await run_both(comm, mockllm, settings, name, f"tell me [[mock {directives}]]", parameters, "diff")
    await comm.disconnect()
    lean, full = seen["lean"], seen["litellm"]
    opened = [p for p in path_taken]
    if opened:  # a stream that fails to open is never read; one that opens is read by its path
        assert opened == ["lean", "litellm"], opened
    assert lean[0] == full[0], f"frames differ:\nlean:    {lean[0]}\nlitellm: {full[0]}"
    assert lean[1] == full[1], f"usage records differ:\nlean:    {lean[1]}\nlitellm: {full[1]}"
    assert lean[2] == full[2], f"upstream requests differ:\nlean:    {lean[2]}\nlitellm: {full[2]}"
    # The case tests what it names (a broken mock would make both paths agree trivially).
    frames, usage = full[0], full[1]
    expected_status = {"normal": "completed", "length": "length", "overrun": "length", "cut": "upstream_error",
                       "error-event": "upstream_error", "http-429": "upstream_error",
                       "first-token-timeout": "upstream_timeout", "slow-first-token": "upstream_timeout",
                       "idle-timeout": "upstream_timeout", "no-usage": "completed",
                       "no-finish": "upstream_error", "no-finish-no-usage": "upstream_error",
                       "no-finish-usage-only": "upstream_error", "no-finish-length": "upstream_error",
                       "no-chunks": "completed", "repeat-at-limit": "completed",
                       "repeat-past-limit": "upstream_error"}
    if name in expected_status:
        assert usage["status"] == expected_status[name], usage
    if name in ("normal", "length", "parameters"):
        assert usage["completion_tokens_source"] == "provider" and usage["cost_usd"] > 0
    if name in ("no-usage", "length-no-usage", "cut"):
        assert usage["completion_tokens_source"] == "counted" and usage["cost_usd"] > 0
    if name == "cut":
        assert [f["type"] for f in frames].count("llm_token") == 7 and frames[-1]["code"] == 502
    tokens = [f for f in frames if f["type"] == "llm_token"]
    if name in ("no-finish", "no-finish-no-usage"):
        assert len(tokens) == 20 and frames[-1]["code"] == 502
    if name == "no-chunks":
        assert not tokens and frames[-1]["type"] == "llm_response_end" and frames[-1]["finish_reason"] == "stop"
    if name.startswith("repeat"):
        assert len(tokens) == REPEAT_LIMIT  # the stream that repeats once more fails instead of its last chunk
        assert (frames[-1]["type"] == "error") == (name == "repeat-past-limit"), frames[-1]
    if name == "http-422":
        assert len(full[2]) == 2  # litellm resent it without the parameters named: so did the lean path


@consumer
async def test_a_deployment_switched_off_and_the_process_switch_keep_litellms_reader(
        issued_key, make_deployment, settings, path_taken):
    await sync_to_async(make_deployment)("on")
    await sync_to_async(make_deployment)("off", lean_stream=False)
    await sync_to_async(make_deployment)("routed", litellm_model="hosted_vllm/routed")  # not litellm's openai provider
    comm = await authed(issued_key)
    assert (await ask(comm, "a", model="on"))[-1]["type"] == "llm_response_end"
    assert (await ask(comm, "b", model="off"))[-1]["type"] == "llm_response_end"
    assert (await ask(comm, "c", model="routed"))[-1]["type"] == "llm_response_end"
    settings.GATEWAY = {**settings.GATEWAY, "LEAN_STREAM": False}
    assert (await ask(comm, "d", model="on"))[-1]["type"] == "llm_response_end"
    await comm.disconnect()
    assert path_taken == ["lean", "litellm", "litellm", "litellm"]


@consumer
async def test_cancel_closes_the_upstream_stream_on_the_lean_path(issued_key, make_deployment, mockllm, path_taken):
    from tests.support.frames import next_frame, send_frame

    await sync_to_async(make_deployment)("slow")
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "c", "model": "slow",
                            "prompt": "go [[mock tokens=500 rate=50 tag=lean-cancel]]"})
    assert (await next_frame(comm))["type"] == "llm_response_start"
    await send_frame(comm, {"type": "cancel", "request_id": "c"})
    while (frame := await next_frame(comm))["type"] != "llm_response_end":
        pass
    assert frame["finish_reason"] == "cancelled"
    record = mockllm.wait_for_event("lean-cancel", lambda r: r["client_gone_at"] is not None)
    assert record["outcome"] == "client_gone" and record["chunks_sent"] < 500
    await comm.disconnect()
    assert path_taken == ["lean"]
    assert (await usage_of("c")).status == "cancelled"
