"""Whose fault a failure is: only the deployment's own failures count toward its breaker.

Through the consumer, against the real mock LLM over HTTP through litellm: a provider's
refusal of the request's content and a failure before the request leaves the gateway
must not open a shared deployment's breaker (one tenant would move every other
tenant's traffic), while a stream cut after its first token must count.
"""
import dataclasses

import pytest
from asgiref.sync import sync_to_async

from billing.models import UsageRecord
from gateway.health import COOLDOWN_SECONDS, FAILURE_THRESHOLD, HealthRegistry, health
from gateway.protocol import ErrorCode, GatewayError
from gateway.providers import UpstreamCall, UpstreamError, UpstreamNotSent, UpstreamStream, _translate
from tests.gateway.test_consumer import authed, usage_of
from tests.gateway.test_routes import make_route, target  # noqa: F401  (fixture)
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


# --- the registry: probes ---------------------------------------------------------------

def test_a_probe_that_says_nothing_about_the_deployment_lets_the_next_request_probe():
    now = [1000.0]
    registry = HealthRegistry(clock=lambda: now[0])
    for _ in range(FAILURE_THRESHOLD):
        registry.record_failure(3)
    now[0] += COOLDOWN_SECONDS + 0.1
    probe = registry.begin_attempt(3)
    other = registry.begin_attempt(3)  # tried last while open: not the probe
    assert not registry.is_available(3)
    registry.release_probe(3, other)
    assert not registry.is_available(3)  # only the probe's own ending releases it
    registry.release_probe(3, probe)  # e.g. the provider refused its content
    assert registry.is_available(3)
    registry.record_first_token(3, 50)  # the next probe got a first token: closed
    assert registry.is_available(3) and registry.ttft_ms(3) == 50


# --- classification of real litellm failures ---------------------------------------------

def mock_target(mockllm, name="m", **fields):
    return dataclasses.replace(target(1), **{
        "name": name, "litellm_model": f"openai/{name}", "api_base": mockllm.api_base, "api_key": "k",
        "first_token_timeout_s": 5, "idle_timeout_s": 5, "total_timeout_s": 10, **fields})


async def open_failure(target_, prompt) -> BaseException:
    stream = UpstreamStream(UpstreamCall(target=target_, messages=[{"role": "user", "content": prompt}],
                                         max_tokens=5))
    try:
        async with stream:
            async for _ in stream.deltas():
                pass
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("the call succeeded")


@pytest.mark.parametrize("directive, fault, status", [
    ("fault=500", True, 500), ("fault=503", True, 503), ("fault=429", True, 429),
    ("fault=400", False, 400), ("fault=413", False, 413), ("fault=422", False, 422),
    ("fault=cut cut_after=1", True, None),
])
async def test_provider_failures_are_classified_by_whose_fault_they_are(mockllm, directive, fault, status):
    error = await open_failure(mock_target(mockllm), f"x [[mock {directive}]]")
    assert isinstance(error, UpstreamError), error
    assert (error.deployment_fault, error.status) == (fault, status)
    assert error.retryable == fault and "LEAKED" not in error.message


async def test_an_unreachable_provider_is_a_connection_failure_not_an_http_500(mockllm):
    error = await open_failure(mock_target(mockllm, api_base="http://127.0.0.1:1/v1"), "x")
    assert isinstance(error, UpstreamError) and error.deployment_fault and error.status is None
    assert "could not be reached" in error.message


async def test_a_timeout_is_the_deployments_fault(mockllm):
    error = await open_failure(mock_target(mockllm, first_token_timeout_s=0.2), "x [[mock fault=hang]]")
    assert isinstance(error, UpstreamError) and error.code == ErrorCode.UPSTREAM_TIMEOUT and error.deployment_fault


async def test_unencodable_text_is_refused_before_the_call_and_litellms_500_for_it_is_not_believed(mockllm):
    error = await open_failure(mock_target(mockllm), "hi \ud800")
    assert isinstance(error, GatewayError) and error.code == ErrorCode.BAD_REQUEST
    # What litellm itself raises for such a body: an "HTTP 500" that never reached the
    # provider. Should anything else fail that way, it is ours, not the deployment's.
    import litellm

    try:
        await litellm.acompletion(model="openai/m", api_base=mockllm.api_base, api_key="k", stream=True,
                                  messages=[{"role": "user", "content": "hi \ud800"}], max_retries=0)
    except Exception as exc:  # noqa: BLE001
        raw = exc
    assert getattr(raw, "status_code", None) == 500
    assert isinstance(_translate(raw, mock_target(mockllm), opening=True), UpstreamNotSent)
    assert isinstance(_translate(raw, mock_target(mockllm), opening=False), UpstreamError)
