"""The one module that talks to litellm.

`open_stream` calls `litellm.acompletion(stream=True)` with litellm's and the
OpenAI client's own retries off (the gateway decides about retries and
fallback), enforces the deployment's first-token, idle and total timeouts, and
always closes the upstream HTTP stream when the caller stops reading — on
normal end, error, cancel or client disconnect — so nothing is generated that
nobody reads. Upstream error text is never passed on: it can echo credentials.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402
import litellm  # noqa: E402

from gateway.protocol import ErrorCode  # noqa: E402
from gateway.routing import Target  # noqa: E402

log = logging.getLogger(__name__)

litellm.telemetry = False
litellm.disable_hf_tokenizer_download = True
litellm.suppress_debug_info = True
litellm.drop_params = True


class UpstreamError(Exception):
    """A failed upstream call, already stripped of the provider's own text."""

    def __init__(self, code: ErrorCode, message: str, *, status: int | None = None,
                 retryable: bool = False, retry_after_ms: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms


@dataclass(frozen=True)
class UpstreamCall:
    target: Target
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None

    def litellm_kwargs(self) -> dict[str, Any]:
        target = self.target
        kwargs: dict[str, Any] = dict(target.extra_params)
        kwargs.update(
            model=target.litellm_model,
            messages=self.messages,
            max_tokens=self.max_tokens,
            stream=True,
            stream_options={"include_usage": True},
            num_retries=0,
            max_retries=0,
            timeout=httpx.Timeout(target.total_timeout_s, connect=target.connect_timeout_s),
        )
        if target.api_base:
            kwargs["api_base"] = target.api_base
        if target.api_key:
            kwargs["api_key"] = target.api_key
        for name in ("temperature", "top_p", "stop", "presence_penalty", "frequency_penalty", "seed"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs


@dataclass
class StreamResult:
    """What the upstream said about the stream, filled in while it is read."""

    response_id: str = ""
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunks: int = field(default=0)


class UpstreamStream:
    """Iterate text deltas of one upstream completion; `result` fills in as it goes."""

    def __init__(self, call: UpstreamCall):
        self.call = call
        self.result = StreamResult()
        self._response = None
        self._deltas = None
        self.attempt_id: str | None = None  # the routing health registry's id for this attempt
        self._deadline = 0.0

    async def __aenter__(self) -> "UpstreamStream":
        target = self.call.target
        self._deadline = time.monotonic() + target.total_timeout_s
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancel that lands as the awaited call completes, and a lost cancel
            # means a stream nobody reads keeps running upstream.
            async with asyncio.timeout(self._budget(target.first_token_timeout_s)):
                self._response = await litellm.acompletion(**self.call.litellm_kwargs())
        except BaseException as exc:
            raise _translate(exc, target) from None
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            # Shielded: closing must finish even when the task is being cancelled,
            # or the upstream keeps generating for nobody.
            with contextlib.suppress(Exception):
                await asyncio.shield(response.aclose())

    def _budget(self, step_timeout: float) -> float:
        return max(0.001, min(step_timeout, self._deadline - time.monotonic()))

    def deltas(self) -> AsyncIterator[str]:
        """The stream's text deltas; the same iterator on every call, so reading
        the first token and then the rest continues one stream."""
        if self._deltas is None:
            self._deltas = self._iterate_deltas()
        return self._deltas

    async def _iterate_deltas(self) -> AsyncIterator[str]:
        target = self.call.target
        iterator = self._response.__aiter__()
        first = True
        while True:
            timeout = self._budget(target.first_token_timeout_s if first else target.idle_timeout_s)
            try:
                async with asyncio.timeout(timeout):
                    chunk = await iterator.__anext__()
            except StopAsyncIteration:
                if not _provider_reported_usage(self._response):
                    # litellm estimates usage when the provider sent none; the
                    # gateway counts for itself instead and says so.
                    self.result.prompt_tokens = self.result.completion_tokens = None
                return
            except BaseException as exc:
                raise _translate(exc, target) from None
            self.result.chunks += 1
            if not self.result.response_id and getattr(chunk, "id", None):
                self.result.response_id = str(chunk.id)
            usage = getattr(chunk, "usage", None)
            if usage is not None and getattr(usage, "completion_tokens", None) is not None:
                self.result.prompt_tokens = int(usage.prompt_tokens or 0)
                self.result.completion_tokens = int(usage.completion_tokens or 0)
            for choice in getattr(chunk, "choices", None) or ():
                if choice.finish_reason:
                    self.result.finish_reason = str(choice.finish_reason)
                delta = getattr(choice, "delta", None)
                text = getattr(delta, "content", None) if delta is not None else None
                if text:
                    first = False
                    yield text


def _provider_reported_usage(response) -> bool:
    """Did the provider itself send usage? (litellm keeps the raw chunks it received.)"""
    chunks = getattr(response, "chunks", None)
    if chunks is None:
        return True  # cannot tell: trust the usage litellm passed on
    return any(getattr(chunk, "usage", None) is not None for chunk in chunks)


def _retry_after_ms(exc: BaseException) -> int | None:
    headers = getattr(exc, "headers", None) or getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except AttributeError:
        return None
    try:
        return max(0, int(float(value) * 1000)) if value is not None else None
    except (TypeError, ValueError):
        return None


def _translate(exc: BaseException, target: Target) -> BaseException:
    """Map any failure of the upstream call to an UpstreamError with our own words."""
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)):
        return exc
    name = target.name
    if isinstance(exc, (asyncio.TimeoutError, litellm.Timeout)):
        return UpstreamError(ErrorCode.UPSTREAM_TIMEOUT, f"upstream {name!r} timed out", retryable=True)
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    if isinstance(exc, litellm.RateLimitError):
        return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} is rate limiting (HTTP 429)",
                             status=429, retryable=True, retry_after_ms=_retry_after_ms(exc))
    if isinstance(exc, litellm.APIConnectionError) and status in (None, 500):
        log.warning("upstream %s connection failed: %s", name, type(exc).__name__)
        return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} could not be reached or broke off",
                             status=None, retryable=True)
    if status is not None and status >= 500:
        return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} failed (HTTP {status})",
                             status=status, retryable=True)
    if status is not None:
        return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} rejected the request (HTTP {status})",
                             status=status, retryable=False)
    log.warning("upstream %s failed: %s", name, type(exc).__name__)
    return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} failed", retryable=True)


def warm_up() -> None:
    """Pay litellm's first-call costs at start-up rather than on a client's first request.

    The first streamed completion of a process imports litellm's provider modules and
    builds its streaming machinery, and the first token count loads the tokenizer's
    files: about 2 s together on a busy 2-core machine, all of it added to the first
    client's time to first token (once enough to pass a test client's 10 s wait). A
    mocked completion (`mock_response`: no HTTP client, no connection) and one token
    count take that cost here. Never fatal: a failure only leaves the cost where it was.
    """
    messages = [{"role": "user", "content": "warm up"}]

    async def one_completion() -> None:
        stream = await litellm.acompletion(model="openai/warm-up", messages=messages, stream=True,
                                           mock_response="ok", api_key="unused", max_tokens=1)
        async for _chunk in stream:
            pass

    # Its own loop, never installed as the current one: the server's loop is untouched.
    loop = asyncio.new_event_loop()
    try:
        litellm.token_counter(model="gpt-4-turbo", messages=messages)
        loop.run_until_complete(one_completion())
    except Exception:
        log.warning("litellm warm-up failed; the first request will pay its start-up cost", exc_info=True)
    finally:
        loop.close()
