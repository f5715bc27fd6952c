"""The mock LLM over real HTTP: raw aiohttp, litellm, and the MockLLMProcess helper.

Named after mockllm/server.py, which every test here talks to; the directives
(mockllm/directives.py) and generated text (mockllm/textgen.py) are checked through it (on their own:
tests/mockllm/test_directives.py, tests/mockllm/test_textgen.py),
and the helper that starts it for the other tests (tests/support/mockllm.py) with it.

These tests use no database (the mock is a plain aiohttp server, independent of Django).
Starting it through ``manage.py mockllm``: tests/openclaw_site/test_mockllm.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before litellm is imported anywhere

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import aiohttp  # noqa: E402
import pytest  # noqa: E402

from mockllm import textgen  # noqa: E402
from mockllm.server import LEAKED_SECRET, REPEATED_CHUNK  # noqa: E402
from tests.support.mockllm import MockLLMError, MockLLMProcess  # noqa: E402

AUTH = {"Authorization": "Bearer mock-key"}
_litellm = None


def get_litellm():
    global _litellm
    if _litellm is None:
        import litellm

        litellm.disable_hf_tokenizer_download = True
        litellm.suppress_debug_info = True
        _litellm = litellm
    return _litellm


@pytest.fixture(scope="module")
def mock():
    # Server defaults: no pacing, so tests are fast; slow cases use directives.
    proc = MockLLMProcess(rate=0, ttft_ms=0, default_tokens=24, wait_ready=False)
    proc.start()
    try:
        get_litellm()  # import in this process while the mock loads its own copy
        proc.wait_ready(60)
        yield proc
    finally:
        code = proc.stop()
        assert code == 0, proc.stderr_text()
        assert "Traceback" not in proc.stderr_text(), proc.stderr_text()


def body(content: str, *, stream: bool = True, include_usage: bool = True, **extra) -> dict:
    data = {"model": "mock-fast", "messages": [{"role": "user", "content": content}], "stream": stream}
    if stream and include_usage:
        data["stream_options"] = {"include_usage": True}
    data.update(extra)
    return data


async def post(mock, payload, headers=AUTH, raw: bytes | None = None):
    """POST to /v1/chat/completions; returns (status, headers, text)."""
    async with aiohttp.ClientSession() as session:
        kwargs = {"data": raw} if raw is not None else {"json": payload}
        async with session.post(
            mock.api_base + "/chat/completions", headers=headers, **kwargs
        ) as resp:
            return resp.status, resp.headers, await resp.text()


def sse_data(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


async def events_for(mock, tag, predicate=None, timeout=5.0):
    return await asyncio.to_thread(mock.wait_for_event, tag, predicate, timeout)


# ----------------------------------------------------------------------------- streaming


@pytest.mark.asyncio
async def test_stream_shape_and_usage(mock):
    payload = body("Tell me a story [[mock tokens=6 tag=shape]]", model="my-model")
    status, headers, text = await post(mock, payload)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) == 1 + 6 + 1 + 1  # role, content x6, finish, usage
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("chatcmpl-mock-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "my-model" for c in chunks)
    assert all(isinstance(c["created"], int) for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:7]]
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:7])
    assert not contents[0].startswith(" ") and contents[0][0].isupper()
    assert all(re.fullmatch(r" [A-Za-z]+[.,]?", piece) for piece in contents[1:]), contents
    finish = chunks[7]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    usage_chunk = chunks[8]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6
    expected_prompt = get_litellm().token_counter(model="gpt-3.5-turbo", messages=payload["messages"])
    assert usage["prompt_tokens"] == expected_prompt

    record = await events_for(mock, "shape", lambda r: r["outcome"] is not None)
    assert record["outcome"] == "completed"
    assert record["chunks_sent"] == 6
    assert record["status"] == 200
    assert record["id"] == chunks[0]["id"]
    assert record["model"] == "my-model" and record["stream"] is True
    assert record["received_at"] <= record["first_chunk_at"] <= record["ended_at"]
    assert record["client_gone_at"] is None
    assert "messages" not in record
    assert record["directives"] == {"tokens": 6, "tag": "shape"}
    full = mock.requests("shape")[0]
    assert full["messages"] == payload["messages"]


@pytest.mark.asyncio
async def test_usage_omit(mock):
    status, _, text = await post(mock, body("[[mock tokens=4 usage=omit tag=omit1]]"))
    assert status == 200
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"

    status, _, text = await post(mock, body("[[mock tokens=4 no_usage tag=omit2]]", stream=False))
    assert status == 200
    result = json.loads(text)
    assert "usage" not in result
    assert result["choices"][0]["finish_reason"] == "stop"

    # Without include_usage there is no usage chunk either.
    status, _, text = await post(mock, body("[[mock tokens=2]]", include_usage=False))
    assert all("usage" not in json.loads(d) for d in sse_data(text)[:-1])


@pytest.mark.asyncio
async def test_max_tokens_stops_with_length(mock):
    status, _, text = await post(mock, body("[[mock tokens=5 tag=len1]]", max_tokens=3))
    chunks = [json.loads(d) for d in sse_data(text)[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert [c for c in contents if c] and len([c for c in contents if c]) == 3
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 3
    record = await events_for(mock, "len1", lambda r: r["outcome"] is not None)
    assert record["outcome"] == "length" and record["chunks_sent"] == 3
    assert mock.requests("len1")[0]["max_tokens"] == 3

    status, _, text = await post(
        mock, body("[[mock tokens=5 tag=len2]]", stream=False, max_completion_tokens=3)
    )
    result = json.loads(text)
    assert status == 200 and result["object"] == "chat.completion"
    assert result["choices"][0]["finish_reason"] == "length"
    assert result["usage"]["completion_tokens"] == 3
    assert len(result["choices"][0]["message"]["content"].split()) == 3


@pytest.mark.asyncio
async def test_non_stream_completion(mock):
    status, _, text = await post(mock, body("hello [[mock tokens=7]]", stream=False, model="x"))
    result = json.loads(text)
    assert status == 200
    assert result["id"].startswith("chatcmpl-mock-") and result["model"] == "x"
    message = result["choices"][0]["message"]
    assert message["role"] == "assistant" and len(message["content"].split()) == 7
    assert result["usage"]["completion_tokens"] == 7


# -------------------------------------------------------------------------------- faults


@pytest.mark.asyncio
@pytest.mark.parametrize("code", [500, 503, 429, 400, 413, 422])
async def test_error_faults(mock, code):
    tag = f"fault{code}"
    status, headers, text = await post(mock, body(f"[[mock fault={code} tag={tag}]]"))
    assert status == code
    error = json.loads(text)["error"]
    assert set(error) >= {"message", "type", "code"}
    assert LEAKED_SECRET in error["message"]
    if code == 429:
        assert headers["Retry-After"] == "1"
        assert error["code"] == "rate_limit_exceeded"
    else:
        assert "Retry-After" not in headers
    record = await events_for(mock, tag)
    assert record["outcome"] == "error" and record["status"] == code


@pytest.mark.asyncio
async def test_429_retry_after_directive(mock):
    status, headers, _ = await post(mock, body("[[mock fault=429 retry_after=7]]", stream=False))
    assert status == 429 and headers["Retry-After"] == "7"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "content, header, needle",
    [
        ("[[mock tokens=abc]]", None, "tokens"),
        ("[[mock bogus=1]]", None, "bogus"),
        ("[[mock fault=418]]", None, "fault"),
        ("[[mock rate=-3]]", None, "rate"),
        ("[[mock dance]]", None, "dance"),
        ("hi", "tokens=1.5", "tokens"),
    ],
)
async def test_bad_directive_is_400(mock, content, header, needle):
    headers = dict(AUTH)
    if header:
        headers["X-Mock-Directives"] = header
    status, _, text = await post(mock, body(content), headers=headers)
    assert status == 400
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_mock_directive"
    assert needle in error["message"]


@pytest.mark.asyncio
async def test_bad_requests(mock):
    status, _, text = await post(mock, body("hi"), headers={})
    assert status == 401 and json.loads(text)["error"]["code"] == "invalid_api_key"
    status, _, text = await post(mock, None, raw=b"{not json")
    assert status == 400 and "JSON" in json.loads(text)["error"]["message"]
    status, _, text = await post(mock, {"model": "m", "stream": True})
    assert status == 400 and "messages" in json.loads(text)["error"]["message"]
    status, _, text = await post(mock, body("hi", max_tokens="many"))
    assert status == 400 and "max_tokens" in json.loads(text)["error"]["message"]
    status, _, text = await post(mock, [1, 2])
    assert status == 400 and set(json.loads(text)["error"]) >= {"message", "type", "code"}
    async with aiohttp.ClientSession() as session:
        async with session.get(mock.base_url + "/nope") as resp:
            assert resp.status == 404 and "error" in await resp.json()
        async with session.get(mock.base_url + "/healthz") as resp:
            assert (await resp.json())["status"] == "ok"
        async with session.get(mock.api_base + "/models", headers=AUTH) as resp:
            models = await resp.json()
            assert models["object"] == "list"
            assert {"mock-fast", "gpt-4-turbo", "claude-3-opus"} <= {m["id"] for m in models["data"]}


@pytest.mark.asyncio
async def test_directive_precedence(mock):
    headers = dict(AUTH, **{"X-Mock-Directives": "tokens=2 tag=prec"})
    payload = {
        "model": "m",
        "stream": False,
        "messages": [
            {"role": "system", "content": "[[mock tokens=3]]"},
            {"role": "user", "content": [{"type": "text", "text": "[[mock tokens=4]] x [[mock tokens=5]]"}]},
        ],
    }
    status, _, text = await post(mock, payload, headers=headers)
    assert status == 200
    assert json.loads(text)["usage"]["completion_tokens"] == 5
    record = await events_for(mock, "prec")
    assert record["directives"]["tokens"] == 5

    headers = dict(AUTH, **{"X-Mock-Directives": "tokens=2"})
    status, _, text = await post(mock, body("no directives here", stream=False), headers=headers)
    assert json.loads(text)["usage"]["completion_tokens"] == 2


@pytest.mark.asyncio
async def test_fault_cut_ends_without_done(mock):
    got = []
    error = None
    async with aiohttp.ClientSession() as session:
        async with session.post(
            mock.api_base + "/chat/completions",
            json=body("[[mock tokens=10 fault=cut cut_after=2 tag=cut1]]"),
            headers=AUTH,
        ) as resp:
            assert resp.status == 200
            try:
                async for line in resp.content:
                    got.append(line.decode())
            except aiohttp.ClientPayloadError as exc:
                error = exc
    assert error is not None, got  # transport abort mid-body
    data = sse_data("".join(got))
    assert "[DONE]" not in data
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in data]
    assert len([c for c in contents if c]) == 2
    assert all(json.loads(d)["choices"][0]["finish_reason"] is None for d in data)
    record = await events_for(mock, "cut1", lambda r: r["outcome"] is not None)
    assert record["outcome"] == "cut" and record["chunks_sent"] == 2


@pytest.mark.asyncio
async def test_fault_no_finish_ends_cleanly_without_a_finish_reason(mock):
    status, _, text = await post(mock, body("[[mock tokens=4 no_finish tag=nofin1]]"))
    assert status == 200
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert len(chunks) == 1 + 4 + 1  # role, content x4, usage: no finish chunk
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:5])
    assert chunks[5]["choices"] == [] and chunks[5]["usage"]["completion_tokens"] == 4
    record = await events_for(mock, "nofin1", lambda r: r["outcome"] is not None)
    assert (record["outcome"], record["finish_reason"], record["chunks_sent"], record["usage_sent"]) == (
        "completed", None, 4, True)

    # Cut at max_tokens: still no finish (no "length" either).
    _, _, text = await post(mock, body("[[mock tokens=10 fault=no_finish]]", max_tokens=2))
    chunks = [json.loads(d) for d in sse_data(text)[:-1]]
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) == 2
    assert not any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)

    # No tokens and no usage: nothing at all but [DONE] (the role chunk rides on the finish chunk).
    _, _, text = await post(mock, body("[[mock tokens=0 no_finish no_usage tag=nofin0]]"))
    assert sse_data(text) == ["[DONE]"]
    record = await events_for(mock, "nofin0", lambda r: r["outcome"] is not None)
    assert (record["outcome"], record["chunks_sent"], record["first_chunk_at"]) == ("completed", 0, None)

    status, _, text = await post(mock, body("[[mock tokens=3 no_finish]]", stream=False))
    assert status == 200 and json.loads(text)["choices"][0]["finish_reason"] is None


@pytest.mark.asyncio
@pytest.mark.parametrize("reason", ["abort", "error"])
async def test_fault_finish_abort_and_error_end_with_that_finish_reason(mock, reason):
    status, _, text = await post(mock, body(f"[[mock tokens=3 fault=finish_{reason} tag=fin-{reason}]]"))
    assert status == 200
    data = sse_data(text)
    assert data[-1] == "[DONE]"
    reasons = [c["choices"][0]["finish_reason"] for c in map(json.loads, data[:-1]) if c["choices"]]
    assert reasons[-1] == reason and not any(reasons[:-1])
    record = await events_for(mock, f"fin-{reason}", lambda r: r["outcome"] is not None)
    assert (record["finish_reason"], record["chunks_sent"]) == (reason, 3)


@pytest.mark.asyncio
async def test_fault_repeat_sends_one_chunk_over_and_over(mock):
    status, _, text = await post(mock, body("[[mock tokens=5 repeat tag=rep1]]"))
    assert status == 200
    chunks = [json.loads(d) for d in sse_data(text)[:-1]]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    assert contents[0] == "" and contents[1:6] == [REPEATED_CHUNK] * 5
    assert len(REPEATED_CHUNK) > 2  # litellm does not count chunks of two characters or fewer
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["usage"]["completion_tokens"] == 5
    record = await events_for(mock, "rep1", lambda r: r["outcome"] is not None)
    assert (record["outcome"], record["chunks_sent"]) == ("completed", 5)

    status, _, text = await post(mock, body("[[mock tokens=3 fault=repeat]]", stream=False))
    assert json.loads(text)["choices"][0]["message"]["content"] == REPEATED_CHUNK * 3


# ------------------------------------------------------------------------------ litellm


@pytest.mark.asyncio
async def test_litellm_streaming_over_http(mock):
    litellm = get_litellm()
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say something [[mock tokens=12 tag=litellm1]]"},
    ]
    response = await litellm.acompletion(
        model="openai/mock-fast",
        api_base=mock.api_base,
        api_key="mock-key",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        num_retries=0,
        max_retries=0,
    )
    text = ""
    usage = None
    finish = None
    async for chunk in response:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    record = await events_for(mock, "litellm1", lambda r: r["outcome"] is not None)
    full = mock.requests("litellm1")[0]
    assert record["outcome"] == "completed"
    assert text == textgen.text(textgen.seed_for_messages(full["messages"]), 12)
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens == record["chunks_sent"] == 12
    assert usage.prompt_tokens == record["prompt_tokens"]
    assert usage.prompt_tokens == litellm.token_counter(model="gpt-3.5-turbo", messages=messages)


@pytest.mark.asyncio
async def test_litellm_error_fault_raises(mock):
    litellm = get_litellm()
    with pytest.raises(litellm.exceptions.RateLimitError):
        await litellm.acompletion(
            model="openai/mock-fast",
            api_base=mock.api_base,
            api_key="mock-key",
            messages=[{"role": "user", "content": "[[mock fault=429]]"}],
            stream=True,
            num_retries=0,
            max_retries=0,
        )


async def litellm_stream(mock, directive):
    """Read a litellm stream of the mock: (content chunks passed on, the exception or None)."""
    response = await get_litellm().acompletion(
        model="openai/mock-fast",
        api_base=mock.api_base,
        api_key="mock-key",
        messages=[{"role": "user", "content": f"[[mock {directive}]]"}],
        stream=True,
        stream_options={"include_usage": True},
        num_retries=0,
        max_retries=0,
    )
    passed = 0
    try:
        async for chunk in response:
            passed += bool(chunk.choices and chunk.choices[0].delta.content)
    except Exception as exc:  # noqa: BLE001 - what litellm raises is the point
        return passed, exc
    return passed, None


@pytest.mark.asyncio
async def test_litellm_fails_the_streams_of_no_finish_and_repeat(mock):
    """What the two faults are for: litellm's rules on a stream without a finish reason and on a model
    repeating one chunk (the gateway's lean read must apply the same: tests/gateway/test_lean_stream.py)."""
    passed, error = await litellm_stream(mock, "tokens=5 no_finish")
    assert passed == 5 and "Stream ended before a finish_reason was received" in str(error)
    assert await litellm_stream(mock, "tokens=0 no_finish no_usage") == (0, None)  # nothing at all: no failure
    limit = get_litellm().REPEATED_STREAMING_CHUNK_LIMIT
    assert await litellm_stream(mock, f"tokens={limit} repeat") == (limit, None)
    passed, error = await litellm_stream(mock, f"tokens={limit + 1} repeat")
    assert passed == limit and "repeating the same chunk" in str(error)


# -------------------------------------------------------------------------- client gone


@pytest.mark.asyncio
async def test_client_gone_during_hang(mock):
    session = aiohttp.ClientSession()
    try:
        resp = await session.post(
            mock.api_base + "/chat/completions",
            json=body("[[mock fault=hang tag=hang1]]"),
            headers=AUTH,
        )
        assert resp.status == 200  # headers are sent, then nothing
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(resp.content.readline(), 0.3)
        closed_at = time.time()
        resp.close()
    finally:
        await session.close()
    record = await events_for(mock, "hang1", lambda r: r["client_gone_at"] is not None)
    assert record["outcome"] == "hung_client_gone"
    assert record["chunks_sent"] == 0 and record["first_chunk_at"] is None
    assert closed_at - 0.05 <= record["client_gone_at"] <= closed_at + 0.2


@pytest.mark.asyncio
async def test_client_gone_during_non_stream_hang(mock):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(
                mock.api_base + "/chat/completions",
                json=body("[[mock hang tag=hang2]]", stream=False),
                headers=AUTH,
                timeout=aiohttp.ClientTimeout(total=0.3),
            ):
                pass
        closed_at = time.time()
    record = await events_for(mock, "hang2", lambda r: r["client_gone_at"] is not None)
    assert record["outcome"] == "hung_client_gone"
    assert closed_at - 0.1 <= record["client_gone_at"] <= closed_at + 0.2


@pytest.mark.asyncio
async def test_client_gone_during_slow_stream(mock):
    session = aiohttp.ClientSession()
    contents = []
    try:
        resp = await session.post(
            mock.api_base + "/chat/completions",
            json=body("[[mock tokens=200 rate=20 ttft_ms=50 tag=slow1]]"),
            headers=AUTH,
        )
        started = time.time()
        async for line in resp.content:
            line = line.decode().strip()
            if line.startswith("data: "):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    contents.append(delta["content"])
            if len(contents) == 3:
                break
        elapsed = time.time() - started
        closed_at = time.time()
        resp.close()
    finally:
        await session.close()
    assert 0.1 <= elapsed < 1.0  # 50 ms + 2 x 50 ms of pacing
    record = await events_for(mock, "slow1", lambda r: r["client_gone_at"] is not None)
    assert record["outcome"] == "client_gone"
    assert 3 <= record["chunks_sent"] <= 5
    assert closed_at - 0.05 <= record["client_gone_at"] <= closed_at + 0.2
    assert record["ended_at"] is not None


@pytest.mark.asyncio
async def test_stall_after_chunks(mock):
    session = aiohttp.ClientSession()
    contents = []
    try:
        resp = await session.post(
            mock.api_base + "/chat/completions",
            json=body("[[mock tokens=10 fault=stall stall_after=2 tag=stall1]]"),
            headers=AUTH,
        )

        async def read():
            async for line in resp.content:
                line = line.decode().strip()
                if line.startswith("data: "):
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        contents.append(delta["content"])

        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(read(), 0.4)
        closed_at = time.time()
        resp.close()
    finally:
        await session.close()
    assert len(contents) == 2
    record = await events_for(mock, "stall1", lambda r: r["client_gone_at"] is not None)
    assert record["outcome"] == "hung_client_gone" and record["chunks_sent"] == 2
    assert closed_at - 0.05 <= record["client_gone_at"] <= closed_at + 0.2


@pytest.mark.asyncio
async def test_pacing_ttft_and_rate(mock):
    arrivals = []
    async with aiohttp.ClientSession() as session:
        started = time.monotonic()
        async with session.post(
            mock.api_base + "/chat/completions",
            json=body("[[mock tokens=6 rate=50 ttft_ms=150]]"),
            headers=AUTH,
        ) as resp:
            async for line in resp.content:
                line = line.decode().strip()
                if line.startswith("data: {"):
                    chunk = json.loads(line[6:])
                    if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 6
    assert 0.14 <= arrivals[0] < 0.5
    assert 0.08 <= arrivals[-1] - arrivals[0] < 0.5  # 5 intervals of 20 ms


# ---------------------------------------------------------------------------------- text


@pytest.mark.asyncio
async def test_no_two_consecutive_chunks_equal(mock):
    status, _, text = await post(mock, body("[[mock tokens=200 seed=7]]"))
    chunks = [json.loads(d) for d in sse_data(text)[:-1]]
    contents = [c["choices"][0]["delta"]["content"] for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(contents) == 200
    assert all(a != b for a, b in zip(contents, contents[1:]))
    assert len(set(contents)) > 100  # varied, not a handful of words
    joined = "".join(contents)
    assert ". " in joined and re.search(r"\. [A-Z]", joined)  # reads like sentences
    # The same holds for many seeds (pure function, fast).
    for seed in range(200):
        pieces = textgen.chunks(seed, 300)
        assert all(a != b for a, b in zip(pieces, pieces[1:]))


@pytest.mark.asyncio
async def test_text_is_deterministic_per_prompt(mock):
    a = json.loads((await post(mock, body("same prompt", stream=False)))[2])
    b = json.loads((await post(mock, body("same prompt", stream=False)))[2])
    c = json.loads((await post(mock, body("other prompt", stream=False)))[2])
    d = json.loads((await post(mock, body("same prompt [[mock seed=3]]", stream=False)))[2])
    text = lambda r: r["choices"][0]["message"]["content"]  # noqa: E731
    assert text(a) == text(b)
    assert text(a) != text(c)
    assert text(d) == textgen.text(3, 24)


# -------------------------------------------------------------------------------- helper


def test_helper_records_and_clear(mock):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", mock.base_url)
    assert mock.api_base == mock.base_url + "/v1"
    asyncio.run(post(mock, body("[[mock tokens=1 tag=helper1]]", stream=False)))
    assert [r["tag"] for r in mock.events("helper1")] == ["helper1"]
    assert mock.requests("helper1")[0]["messages"][0]["content"].startswith("[[mock")
    with pytest.raises(AssertionError, match="helper1"):
        mock.wait_for_event("helper1", lambda r: r["outcome"] == "cut", timeout=0.2)
    mock.clear()
    assert mock.events() == []
    assert mock.events("helper1") == []


def test_helper_process_lifecycle():
    with MockLLMProcess(wait_ready=False) as proc:
        assert proc.port and proc.base_url == f"http://127.0.0.1:{proc.port}"
        health = json.loads(proc._request("GET", "/healthz"))
        assert health["status"] == "ok"
        assert proc.events() == []
        # An in-flight hanging request must not prevent a clean, quick stop.
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body("[[mock hang]]", stream=False)),
            headers=dict(AUTH, **{"Content-Type": "application/json"}),
        )
        started = time.monotonic()
        code = proc.stop()
        conn.close()
    assert code == 0
    assert time.monotonic() - started < 5
    assert "Traceback" not in proc.stderr_text()


def test_helper_reports_startup_failure():
    with pytest.raises(MockLLMError) as info:
        MockLLMProcess(rate=-1, wait_ready=False).start()
    assert "--rate" in str(info.value) and "exited with code 2" in str(info.value)
