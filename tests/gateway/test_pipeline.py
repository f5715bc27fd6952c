"""One request's path (gateway/pipeline.py), through the consumer against the real mock
LLM over HTTP through litellm: falling back over a route's candidates, and whose fault a
failure is — only the deployment's own failures count toward its breaker.

A provider's refusal of the request's content and a failure before the request leaves
the gateway must not open a shared deployment's breaker (one tenant would move every
other tenant's traffic), while a stream cut after its first token must count.
"""
import pytest
from asgiref.sync import sync_to_async

from billing.models import UsageRecord
from gateway.health import FAILURE_THRESHOLD, health
from tests.support.consumer import authed, usage_of
from tests.support.catalog import make_route  # noqa: F401  (fixture)
from tests.support.frames import collect, send_frame, text_of

consumer = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shared_route(make_deployment, make_route):
    """A platform route over a cheap and a pricier platform deployment (cost strategy)."""
    cheap = make_deployment("shared-cheap", input_price="1", output_price="1")
    pricier = make_deployment("shared-pricier", input_price="9", output_price="9")
    make_route("general", "cost", [pricier, cheap], max_attempts=3)
    return cheap, pricier


async def ask(comm, rid: str, model: str, prompt: str) -> list[dict]:
    await send_frame(comm, {"type": "llm_request", "request_id": rid, "model": model, "prompt": prompt})
    return (await collect(comm))[rid]


@consumer
@pytest.mark.parametrize("status", [400, 413, 422])
async def test_provider_refusals_of_the_content_do_not_open_a_shared_breaker_or_fail_over(
        status, org, other_org, issued_key, shared_route, mockllm):
    from tenants.services import api_key_create

    cheap, pricier = shared_route
    comm = await authed(issued_key)
    for i in range(FAILURE_THRESHOLD):
        frames = await ask(comm, f"bad-{i}", "general", f"x [[mock fault={status} tag=refused-{status}]]")
        [error] = frames
        assert (error["code"], error["error"], error["retryable"]) == (502, "upstream_error", False), error
        assert f"HTTP {status}" in error["message"] and "LEAKED" not in error["message"]
    await comm.disconnect()
    # No other candidate was tried with a refused request. (litellm itself resends a
    # 422 once without the parameters the provider named: still the same deployment.)
    models = [e["model"] for e in mockllm.events(f"refused-{status}")]
    assert set(models) == {"shared-cheap"} and len(models) == FAILURE_THRESHOLD * (2 if status == 422 else 1)
    assert health.is_available(cheap.pk)
    record = await usage_of("bad-0")
    assert record.status == "upstream_error" and record.cost_usd == 0
    assert [a["error"] for a in record.route["attempts"]] == [f"HTTP {status}"]
    # Another org's traffic on the shared route still goes to the cheap deployment.
    other = await sync_to_async(api_key_create)(org=other_org, name="other")
    comm = await authed(other)
    start = (await ask(comm, "theirs", "general", "hello [[mock tokens=2]]"))[0]
    assert start["route"]["deployment"] == "shared-cheap" and start["route"]["attempts"] == [], start
    await comm.disconnect()


@consumer
async def test_the_deployments_own_failures_still_fail_over_and_open_its_breaker(issued_key, shared_route):
    cheap, pricier = shared_route
    comm = await authed(issued_key)
    for i in range(FAILURE_THRESHOLD):
        [error] = await ask(comm, f"f-{i}", "general", "x [[mock fault=503]]")
        assert (error["code"], error["retryable"]) == (502, True) and "after 2 attempts" in error["message"]
    await comm.disconnect()
    assert not health.is_available(cheap.pk) and not health.is_available(pricier.pk)


@consumer
async def test_a_prompt_that_cannot_be_encoded_is_a_400_and_never_reaches_or_counts_against_upstream(
        issued_key, shared_route, mockllm):
    cheap, _ = shared_route
    comm = await authed(issued_key)
    for i in range(FAILURE_THRESHOLD):
        [error] = await ask(comm, f"sur-{i}", "general", "hello \ud800 [[mock tag=surrogate]]")
        assert (error["code"], error["error"], error["retryable"]) == (400, "bad_request", False), error
        assert "upstream" not in error["message"]
        assert error["message"].startswith("prompt: must not contain a lone surrogate")  # refused while parsing
    start = (await ask(comm, "fine", "general", "hello [[mock tokens=2]]"))[0]
    assert start["route"]["deployment"] == "shared-cheap" and start["route"]["attempts"] == []
    await comm.disconnect()
    assert mockllm.events("surrogate") == []
    assert health.is_available(cheap.pk)
    # Refused while parsing: it never became a request, so it leaves no usage record.
    assert not await UsageRecord.objects.filter(client_request_id__startswith="sur-").aexists()


@consumer
async def test_a_bug_before_the_request_is_sent_is_a_500_that_counts_against_no_deployment(
        issued_key, shared_route, monkeypatch):
    import gateway.providers

    cheap, pricier = shared_route
    calls = []

    async def broken(**kwargs):
        calls.append(kwargs["model"])
        raise TypeError("an argument the gateway got wrong")

    monkeypatch.setattr(gateway.providers.litellm, "acompletion", broken)
    comm = await authed(issued_key)
    for i in range(FAILURE_THRESHOLD):
        [error] = await ask(comm, f"bug-{i}", "general", "hello")
        assert (error["code"], error["error"], error["retryable"]) == (500, "internal_error", False), error
        assert "TypeError" not in error["message"] and "upstream" not in error["message"]
    await comm.disconnect()
    assert calls == ["openai/shared-cheap"] * FAILURE_THRESHOLD  # no other candidate tried
    assert health.is_available(cheap.pk) and health.is_available(pricier.pk)
    assert (await usage_of("bug-0")).status == "internal_error"


@consumer
async def test_streams_cut_after_their_first_token_count_and_a_clean_end_clears_the_count(
        issued_key, make_deployment):
    cuts = await sync_to_async(make_deployment)("cuts")
    comm = await authed(issued_key)

    async def cut(rid):
        frames = await ask(comm, rid, "cuts", "x [[mock fault=cut cut_after=2 tokens=10]]")
        assert frames[0]["type"] == "llm_response_start" and text_of(frames)
        assert (frames[-1]["type"], frames[-1]["code"], frames[-1]["retryable"]) == ("error", 502, False)

    for i in range(FAILURE_THRESHOLD - 1):
        await cut(f"c{i}")
    assert (await ask(comm, "clean", "cuts", "x [[mock tokens=3]]"))[-1]["type"] == "llm_response_end"
    for i in range(FAILURE_THRESHOLD - 1):
        await cut(f"d{i}")
    assert health.is_available(cuts.pk)  # the clean stream in between started the count again
    await cut("last")
    assert not health.is_available(cuts.pk)
    await comm.disconnect()


# --- fallback over a route's candidates ------------------------------------------------

@pytest.fixture
def failing_then_healthy(make_deployment, make_route):
    def faulty(name, directives, **fields):
        return make_deployment(name, extra_params={"extra_headers": {"X-Mock-Directives": directives}}, **fields)

    failing = [faulty("errors", "fault=500"), faulty("limited", "fault=429 retry_after=30"),
               faulty("broken", "fault=503"), faulty("hung", "fault=hang", first_token_timeout_ms=300)]
    make_route("resilient", "fallback", [*failing, make_deployment("healthy")], max_attempts=5)


@consumer
async def test_a_failing_deployment_is_skipped_and_the_client_gets_a_complete_answer(issued_key,
                                                                                     failing_then_healthy):
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "fb", "model": "resilient",
                            "prompt": "hello [[mock tokens=6]]"})
    frames = (await collect(comm))["fb"]
    start, end = frames[0], frames[-1]
    assert start["type"] == "llm_response_start" and end["type"] == "llm_response_end"
    route = start["route"]
    assert route["deployment"] == "healthy" and route["route"] == "resilient" and route["strategy"] == "fallback"
    assert [(a["deployment"], a["error"]) for a in route["attempts"]] == [
        ("errors", "HTTP 500"), ("limited", "HTTP 429"), ("broken", "HTTP 503"), ("hung", "timeout")]
    assert route["reason"] == "fallback after timeout from hung"
    assert len(text_of(frames).split()) == 6
    # The 429's Retry-After opened that deployment's breaker: the next request skips it.
    await send_frame(comm, {"type": "llm_request", "request_id": "fb2", "model": "resilient",
                            "prompt": "again [[mock tokens=2]]"})
    attempts = (await collect(comm))["fb2"][0]["route"]["attempts"]
    assert "limited" not in [a["deployment"] for a in attempts]
    await comm.disconnect()
    record = await usage_of("fb")
    assert record.deployment_name == "healthy" and len(record.route["attempts"]) == 4


@consumer
async def test_a_cut_mid_stream_ends_with_an_error_and_bills_what_was_received(issued_key, make_deployment,
                                                                                make_route):
    from asgiref.sync import sync_to_async

    await sync_to_async(make_route)("cutting", "fallback", [
        await sync_to_async(make_deployment)("cuts", extra_params={"extra_headers": {"X-Mock-Directives": "fault=cut cut_after=4"}}),
        await sync_to_async(make_deployment)("spare"),
    ])
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "cut", "model": "cutting", "prompt": "x"})
    frames = (await collect(comm))["cut"]
    assert frames[0]["route"]["deployment"] == "cuts"
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == 502 and frames[-1]["retryable"] is False
    assert len([f for f in frames if f["type"] == "llm_token"]) == 4  # never spliced with "spare"
    await comm.disconnect()
    record = await usage_of("cut")
    assert record.status == "upstream_error" and record.completion_tokens >= 4 and record.cost_usd > 0


@consumer
async def test_when_every_candidate_fails_the_client_gets_one_error_naming_the_attempts(issued_key,
                                                                                        make_deployment, make_route):
    from asgiref.sync import sync_to_async

    down = [await sync_to_async(make_deployment)(f"down{i}", extra_params={
        "extra_headers": {"X-Mock-Directives": "fault=500"}}) for i in range(2)]
    await sync_to_async(make_route)("doomed", "fallback", down)
    comm = await authed(issued_key)
    await send_frame(comm, {"type": "llm_request", "request_id": "all", "model": "doomed", "prompt": "x"})
    frames = (await collect(comm))["all"]
    assert len(frames) == 1 and frames[0]["code"] == 502 and "after 2 attempts" in frames[0]["message"]
    await comm.disconnect()
    record = await usage_of("all")
    assert [a["deployment"] for a in record.route["attempts"]] == ["down0", "down1"]
