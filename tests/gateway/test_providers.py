"""Calling a provider through litellm (gateway/providers.py): real litellm failures
against the mock LLM are classified by whose fault they are."""
import dataclasses

import pytest

from gateway.protocol import ErrorCode, GatewayError
from gateway.providers import StreamResult, UpstreamCall, UpstreamError, UpstreamNotSent, UpstreamStream, _translate
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


async def read_all(target_, prompt) -> tuple[list[str], str | None, StreamResult, bool]:
    """The deltas, the failure's message (or None), the stream's result and whether the lean read was used."""
    stream = UpstreamStream(UpstreamCall(target=target_, messages=[{"role": "user", "content": prompt}],
                                         max_tokens=1000))
    deltas, error = [], None
    try:
        async with stream:
            async for delta in stream.deltas():
                deltas.append(delta)
    except UpstreamError as exc:
        error = exc.message
    return deltas, error, stream.result, stream.lean


@pytest.mark.parametrize("directive, fails", [("tokens=0 no_finish no_usage", False), ("tokens=5 no_finish", True),
                                             ("repeat tokens=101", True), ("repeat tokens=100", False)])
async def test_both_readers_fill_the_same_stream_result(mockllm, settings, directive, fails):
    """What the pipeline takes from a stream: the lean read gives what litellm's reader gives, also where
    the frames would not tell them apart (test_lean_stream.py compares those): a stream of nothing but
    [DONE] finishes with "stop" for litellm, and the pipeline takes no reason for "stop" as well."""
    seen, ids = {}, {}
    for lean in (True, False):
        settings.GATEWAY = {**settings.GATEWAY, "LEAN_STREAM": lean}
        deltas, error, result, used = await read_all(mock_target(mockllm), f"x [[mock {directive}]]")
        assert used == lean
        # After a failure the pipeline bills what it counted: the provider's usage is not read.
        usage = (result.prompt_tokens, result.completion_tokens) if error is None else None
        seen[lean], ids[lean] = (deltas, error, result.finish_reason, usage), result.response_id
    assert seen[True] == seen[False]
    assert (seen[True][1] is not None) == fails, seen[True]
    if directive.startswith("tokens=0"):
        assert seen[True] == ([], None, "stop", (None, None))
        # litellm makes up an id for it; the lean read keeps none, as the provider sent none.
        assert ids[False].startswith("chatcmpl-") and ids[True] == ""
