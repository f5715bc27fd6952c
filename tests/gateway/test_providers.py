"""Calling a provider through litellm (gateway/providers.py): real litellm failures
against the mock LLM are classified by whose fault they are."""
import dataclasses

import pytest

from gateway.protocol import ErrorCode, GatewayError
from gateway.providers import UpstreamCall, UpstreamError, UpstreamNotSent, UpstreamStream, _translate
from tests.support.catalog import target


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
