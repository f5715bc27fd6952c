"""The one module that talks to litellm.

`UpstreamStream` — opened by entering it, read through `deltas()`, ended by `close()` —
calls `litellm.acompletion(stream=True)` with litellm's and the OpenAI client's own
retries off (the gateway decides about retries and fallback), enforces the
deployment's first-token, idle and total timeouts, and always closes the upstream
HTTP stream when the caller stops reading — on normal end, error, cancel or client
disconnect — so nothing is generated that nobody reads. Upstream error text is never passed on: it can echo credentials.

Every failure is also classified by whose fault it is (`UpstreamError.deployment_fault`,
docs/routing.md "Health and fallback"): the deployment's (timeouts, 5xx, connection
failures, a stream cut off, the provider refusing our credential or rate-limiting us)
counts toward its circuit breaker; a provider's 400/413/422 for the request's content
does not, and neither does anything that fails before the request leaves the gateway
(`GatewayError` 400 for input that cannot be sent, `UpstreamNotSent` for our own bug).

The lean read (docs/architecture.md, "The lean streaming path"): for a deployment litellm
resolves to the `openai` provider (OpenAI itself and OpenAI-compatible servers such as the
mock LLM, `openai/<model>` with an `api_base`), litellm still builds and sends the request
and maps every failure to open it, but the open HTTP response's server-sent events are
read here instead of through litellm's stream wrapper, which costs about a millisecond of
CPU per chunk (a pydantic object, an async generator per chunk). What the rest of the
gateway sees is the same: text deltas, finish reason, the provider's usage, errors mapped
by litellm's own stream-failure mapping, the same timeouts. Per deployment
(`Deployment.lean_stream`) and per process (`OPENCLAW_LEAN_STREAM=0`) it can be turned
off; `tests/gateway/test_lean_stream.py` runs the same requests both ways and compares.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import httpx
import openai  # litellm's exceptions are the OpenAI client's

from django.conf import settings

from catalog.litellm_setup import litellm
from catalog.targets import Target
from gateway.protocol import ErrorCode, GatewayError

log = logging.getLogger(__name__)


class UpstreamError(Exception):
    """A failed upstream call, already stripped of the provider's own text.

    `deployment_fault`: the failure says something about the deployment (it counts
    toward its circuit breaker and the request may fail over to another candidate).
    False for a provider that refused this request's content (400/413/422): the
    same request would fail anywhere, and another tenant's traffic must not pay."""

    def __init__(self, code: ErrorCode, message: str, *, status: int | None = None,
                 retryable: bool = False, retry_after_ms: int | None = None, deployment_fault: bool = True):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        self.deployment_fault = deployment_fault


class UpstreamNotSent(Exception):
    """The upstream call failed inside the gateway, before the request was sent: a
    bug of ours (answered 500 internal_error), never the deployment's fault."""


# Provider statuses that mean "this request's content is not acceptable": not the
# deployment's fault, and no reason to expect another deployment to accept it.
CONTENT_REFUSALS = frozenset({400, 413, 422})


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
        self._raw = None  # the HTTP response whose events the lean read parses, or None
        self.lean = False  # read by the lean read (known once the stream is open)
        self._deltas = None
        self.attempt_id: str | None = None  # the routing health registry's id for this attempt
        self._deadline = 0.0
        # Told how the provider's stream ended, once: None when it ended normally, the
        # UpstreamError when it failed. Not called when the reader stops first
        # (cancel, max_tokens reached) or when the call failed before it was sent.
        self.on_end: Callable[[UpstreamError | None], None] | None = None

    async def __aenter__(self) -> "UpstreamStream":
        target = self.call.target
        problem = _unsendable_text(self.call)
        if problem:
            raise GatewayError(ErrorCode.BAD_REQUEST, problem)
        self._deadline = time.monotonic() + target.total_timeout_s
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
            # cancel that lands as the awaited call completes, and a lost cancel
            # means a stream nobody reads keeps running upstream.
            async with asyncio.timeout(self._budget(target.first_token_timeout_s)):
                self._response = await litellm.acompletion(**self.call.litellm_kwargs())
        except BaseException as exc:
            raise _translate(exc, target, opening=True) from None
        if self._response is None:
            # litellm (drop_params) answers a provider's 422 by resending the request
            # without the parameters the provider named, and returns nothing when that
            # is refused too: the provider's refusal of this request's content.
            raise UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {target.name!r} rejected the request as "
                                "invalid (HTTP 422)", status=422, retryable=False, deployment_fault=False)
        if lean_read_applies(target):
            self._raw = _raw_event_stream(self._response)
            self.lean = self._raw is not None
        return self

    def _ended(self, error: "UpstreamError | None") -> None:
        hook, self.on_end = self.on_end, None
        if hook is not None:
            try:
                hook(error)
            except Exception:  # bookkeeping must never break the stream's reader
                log.exception("recording how upstream %s ended failed", self.call.target.name)

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

    async def close(self) -> None:
        response, self._response = self._response, None
        self._raw = None
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
            self._deltas = self._iterate_events() if self._raw is not None else self._iterate_deltas()
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
                self._ended(None)
                return
            except BaseException as exc:
                error = _translate(exc, target, opening=False)
                if isinstance(error, UpstreamError):
                    self._ended(error)
                raise error from None
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

    async def _iterate_events(self) -> AsyncIterator[str]:
        """The lean read: the same deltas and `result` as `_iterate_deltas`, parsed from
        the provider's server-sent events as the OpenAI client would (a `data:` event per
        chunk, `[DONE]` last, an `{"error": ...}` event a failure), with litellm's rules
        applied where they change the outcome: its finish-reason mapping (of the first
        choice), its failure on a finish reason of `abort` or `error`
        (`_refuse_failed_finish`), its failure on a stream that ends after a chunk but before any finish
        reason (and "stop" for one without a single chunk), its failure on a model repeating
        one chunk (`_RepeatGuard`), and its mapping of a failed stream to an exception."""
        target = self.call.target
        result = self.result
        response = self._raw
        blocks = response.aiter_bytes().__aiter__()
        loads = json.loads
        pending = b""
        data: list[bytes] = []
        first = True
        finished = False  # the provider sent a finish reason
        repeat_guard = _RepeatGuard(litellm.REPEATED_STREAMING_CHUNK_LIMIT)
        at_end = done = False
        while not (at_end or done):
            timeout = self._budget(target.first_token_timeout_s if first else target.idle_timeout_s)
            try:
                async with asyncio.timeout(timeout):
                    block = await _next_block(blocks, response)
            except BaseException as exc:
                raise self._failed(exc) from None
            if block is None:
                at_end = True
                lines = [pending, b""] if pending else [b""]
            else:
                pending += block
                if b"\n" not in block:
                    continue
                *lines, pending = pending.split(b"\n")
            for line in lines:
                if line and line[-1] == 13:  # b"\r": CRLF line ends
                    line = line[:-1]
                if line:
                    if line.startswith(b"data:"):
                        data.append(line[6:] if line[5:6] == b" " else line[5:])
                    continue  # event, id, retry fields and comments: chat completions use data only
                if not data:
                    continue
                payload = data[0] if len(data) == 1 else b"\n".join(data)
                data = []
                if payload.startswith(b"[DONE]"):
                    done = True
                    break
                try:
                    chunk = loads(payload)
                    if isinstance(chunk, dict) and chunk.get("error"):
                        raise _stream_error_event(chunk["error"], response)
                except Exception as exc:
                    raise self._failed(exc) from None
                if not isinstance(chunk, dict):
                    continue
                choices = chunk.get("choices") or ()
                try:
                    _refuse_failed_finish(chunk, choices, self._response)
                    repeat_guard.see(choices)  # before anything of this chunk counts: litellm fails before it
                except Exception as exc:
                    raise self._failed(exc) from None
                result.chunks += 1
                if not result.response_id and chunk.get("id"):
                    result.response_id = str(chunk["id"])
                usage = chunk.get("usage")
                if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    result.completion_tokens = int(usage["completion_tokens"])
                reason = choices[0].get("finish_reason") if choices else None  # litellm reads the first choice's
                if reason:
                    result.finish_reason = str(_map_finish_reason(reason))
                    finished = True
                for choice in choices:
                    delta = choice.get("delta")
                    text = delta.get("content") if isinstance(delta, dict) else None
                    if text and isinstance(text, str):
                        first = False
                        yield text
        if done:
            # The rest of the body (the chunked encoding's end) lets the connection be
            # reused, as the OpenAI client does; a failure here ends nothing.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._budget(target.idle_timeout_s)):
                    while await _next_block(blocks, response) is not None:
                        pass
        if not finished:
            if result.chunks:
                # litellm fails an OpenAI stream that ends, even cleanly, after a chunk but
                # before a finish reason.
                raise self._failed(httpx.RemoteProtocolError("Stream ended before a finish_reason was received",
                                                             request=httpx.Request("POST", "https://upstream")))
            # A stream without a single chunk is, to litellm, an empty answer that stopped.
            result.finish_reason = "stop"
        self._ended(None)

    def _failed(self, exc: BaseException) -> BaseException:
        """The lean read's failure as `_iterate_deltas` would see it: first through
        litellm's own mapping of a failed stream, then `_translate`. Called in the
        `except` block of the failure, so the exception chain is litellm's too."""
        if not isinstance(exc, (asyncio.CancelledError, asyncio.TimeoutError, KeyboardInterrupt, SystemExit,
                                GeneratorExit)):
            mapper = getattr(self._response, "_handle_stream_fallback_error", None)
            if mapper is not None:
                try:
                    mapper(exc)
                except Exception as mapped:  # it always raises: the mapped exception
                    exc = mapped
        error = _translate(exc, self.call.target, opening=False)
        if isinstance(error, UpstreamError):
            self._ended(error)
        return error


def _refuse_failed_finish(chunk: dict, choices, wrapper) -> None:
    """litellm's failures on a provider's own finish reason: `abort` on any choice (an
    upstream that gave up generating), `error` on the first (its finish-reason mapping
    would call it "stop"). Raised as litellm's chunk handling raises them (the second
    already through its stream's exception mapping), for `_failed` to map alike."""
    if any(isinstance(choice, dict) and str(choice.get("finish_reason")) == "abort" for choice in choices):
        raise litellm.InternalServerError(message="Upstream generation aborted (finish_reason=abort)",
                                          model=str(chunk.get("model") or ""), llm_provider="openai")
    if choices and isinstance(choices[0], dict) and choices[0].get("finish_reason") == "error":
        try:
            raise Exception("openai raised a streaming error - finish_reason: error, no content string given.")
        except Exception as exc:
            mapper = getattr(wrapper, "_map_stream_exception", None)
            if mapper is None:
                raise
            raise mapper(exc)


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


def _unsendable_text(call: UpstreamCall) -> str | None:
    """Why the client's text cannot be encoded for the provider (UTF-8 JSON), or None.

    Checked before the call, so input that can never be sent is the client's 400 —
    not a failure of the deployment, and not the "HTTP 500" litellm would call it."""
    texts = [("the prompt", m.get(key)) for m in call.messages for key in ("content", "name")]
    stop = call.stop if isinstance(call.stop, list) else [call.stop]
    texts += [("a stop string", s) for s in stop]
    for where, text in texts:
        if not isinstance(text, str):
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"{where} contains an unpaired surrogate (U+{ord(text[exc.start]):04X}), which is not "
                    "valid Unicode text and cannot be sent to the model")
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (litellm wraps the openai client's error,
    which wraps httpx's, which wraps the socket's), outermost first."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 16 and all(exc is not seen for seen in chain):
        chain.append(exc)
        exc = exc.__cause__ or (exc.__context__ if not exc.__suppress_context__ else None)
    return chain


# Raised by the transport when the provider could not be reached or broke off.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (OSError, httpx.TransportError, openai.APIConnectionError)
try:
    import aiohttp  # litellm's default async transport

    _TRANSPORT_ERRORS += (aiohttp.ClientError,)
except ImportError:  # pragma: no cover
    pass


def _from_the_network(e: BaseException) -> bool:
    """Raised by the network or the HTTP client — evidence that the call went out.
    litellm's own exception classes are labels it puts on anything (it calls an
    encoding error 'HTTP 500'), so they prove nothing by themselves."""
    if type(e).__module__.startswith("litellm"):
        return False
    return isinstance(e, _TRANSPORT_ERRORS + (httpx.HTTPStatusError, openai.APIStatusError))


# Raised by Python code (litellm's or ours) building the request, not by anything
# the provider sent. Client text that cannot be encoded is refused before the call
# (`_unsendable_text`), so an encoding error here is ours (a deployment's header,
# say). ValueError in general is not here: parsing a provider's malformed answer
# raises it.
_LOCAL_BUGS = (UnicodeEncodeError, TypeError, AttributeError, LookupError, NameError, ImportError,
               NotImplementedError, AssertionError, RecursionError)


def _translate(exc: BaseException, target: Target, *, opening: bool) -> BaseException:
    """Map any failure of the upstream call to our own error, classified by fault.

    `opening`: the failure came from starting the call (nothing was read from the
    provider's stream yet), so it may have happened before anything was sent."""
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit, GeneratorExit)):
        return exc
    name = target.name
    chain = _causes(exc)
    kinds = ", ".join(type(e).__name__ for e in chain)
    if any(isinstance(e, (asyncio.TimeoutError, litellm.Timeout, httpx.TimeoutException)) for e in chain):
        return UpstreamError(ErrorCode.UPSTREAM_TIMEOUT, f"upstream {name!r} timed out", retryable=True)
    if opening and isinstance(chain[-1], _LOCAL_BUGS) and not any(_from_the_network(e) for e in chain):
        log.error("the call to upstream %s failed before it was sent (%s)", name, kinds)
        return UpstreamNotSent(f"the call to upstream {name!r} failed before it was sent ({kinds})")
    status = _provider_status(chain)
    if status == 429 or isinstance(exc, litellm.RateLimitError):
        return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} is rate limiting (HTTP 429)",
                             status=429, retryable=True, retry_after_ms=_retry_after_ms(exc))
    if status is None and any(isinstance(e, _TRANSPORT_ERRORS) for e in chain):
        log.warning("upstream %s connection failed: %s", name, kinds)
        return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} could not be reached or broke off",
                             status=None, retryable=True)
    if status is None:
        log.warning("upstream %s failed: %s", name, kinds)
        return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} failed", retryable=True)
    if status >= 500:
        return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} failed (HTTP {status})",
                             status=status, retryable=True)
    if status in CONTENT_REFUSALS:
        return UpstreamError(ErrorCode.UPSTREAM_ERROR,
                             f"upstream {name!r} rejected the request as invalid (HTTP {status})",
                             status=status, retryable=False, deployment_fault=False)
    # 401/403 (our credential), 404 (the model is not there), 408, 409...: the
    # deployment's configuration or state, not the request.
    return UpstreamError(ErrorCode.UPSTREAM_ERROR, f"upstream {name!r} refused the call (HTTP {status})",
                         status=status, retryable=False)


def _provider_status(chain: list[BaseException]) -> int | None:
    """The HTTP status the provider answered with, or None if it sent none.

    litellm labels failures that never got an answer (connection refused, an
    encoding error) with a made-up 500; the status is the provider's only when the
    HTTP client saw a response, or when litellm reports one with no lower-level
    network error beneath it (providers it calls without httpx)."""
    for e in chain:
        if isinstance(e, httpx.HTTPStatusError):
            return e.response.status_code
    if any(isinstance(e, _TRANSPORT_ERRORS) for e in chain[1:]) or not isinstance(chain[0], openai.APIError):
        return None
    status = getattr(chain[0], "status_code", None)
    return status if isinstance(status, int) else None


# --- the lean read --------------------------------------------------------------------

try:  # the OpenAI client's own notion of a timeout and of a failed read (httpx, httpx2)
    from openai._httpx2 import request_exceptions as _request_exceptions, timeout_exceptions as _timeout_exceptions

    _READ_TIMEOUTS: tuple[type[BaseException], ...] = _timeout_exceptions()
    _READ_FAILURES: tuple[type[BaseException], ...] = _request_exceptions()
except ImportError:  # pragma: no cover - another openai release
    _READ_TIMEOUTS, _READ_FAILURES = (httpx.TimeoutException,), (httpx.RequestError,)

try:
    from litellm.litellm_core_utils.core_helpers import map_finish_reason as _map_finish_reason
except ImportError:  # pragma: no cover - another litellm release
    def _map_finish_reason(reason: str) -> str:
        return reason


def lean_read_applies(target: Target) -> bool:
    """Whether the deployment's streams are read by the lean read: the process switch
    (`OPENCLAW_LEAN_STREAM`), the deployment's own (`lean_stream`), and litellm
    resolving its model string to the `openai` provider."""
    return (settings.GATEWAY["LEAN_STREAM"] and getattr(target, "lean_stream", True)
            and _litellm_provider(target.litellm_model, target.api_base or None) == "openai")


@functools.lru_cache(maxsize=1024)
def _litellm_provider(model: str, api_base: str | None) -> str | None:
    try:
        return litellm.get_llm_provider(model=model, api_base=api_base)[1]
    except Exception:  # litellm cannot place it: the call will say so, through litellm
        return None


def _raw_event_stream(response):
    """The unread HTTP response under litellm's stream, when it is the OpenAI client's
    stream of chat completion chunks; None otherwise (a response litellm made up, such
    as its answer to an output-token-limit refusal, or another client): read by litellm."""
    stream = getattr(response, "completion_stream", None)
    raw = getattr(stream, "response", None)
    if not isinstance(stream, openai.AsyncStream) or not hasattr(raw, "aiter_bytes"):
        return None
    if getattr(raw, "is_stream_consumed", False):
        return None
    return raw


async def _next_block(blocks, response) -> bytes | None:
    """The next bytes of the body (None at its end), failures named as the OpenAI
    client names them."""
    try:
        return await blocks.__anext__()
    except StopAsyncIteration:
        return None
    except _READ_TIMEOUTS as err:
        raise openai.APITimeoutError(request=response.request) from err
    except _READ_FAILURES as err:
        raise openai.APIConnectionError(request=response.request) from err


_NOTHING = object()  # the repeat guard has kept no chunk yet
_NO_CHOICES = object()  # a chunk without choices (usage only), as the repeat guard keeps it


class _RepeatGuard:
    """litellm's guard against a model stuck in a loop (`CustomStreamWrapper.
    raise_on_model_repetition`), on the chunks litellm would keep. Before it keeps a chunk
    with text, litellm compares the two chunks it kept last (not the new one): the count
    of equal texts in a row goes up when they are equal and over two characters, starts
    again at 1 otherwise, is left alone when either of them has no choices, and at
    `limit` the stream fails. So `limit` equal chunks are passed on and the next chunk
    with text fails it, whatever its text. litellm keeps every chunk without choices, every
    chunk with text, and of the chunks without text only the first and a finish."""

    __slots__ = ("limit", "count", "last", "before_last", "started")

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 1
        self.last = self.before_last = _NOTHING
        self.started = False  # a chunk with choices was kept (litellm's "sent_first_chunk")

    def see(self, choices) -> None:
        """Take one chunk's choices; raises litellm's error where litellm raises it."""
        if not choices:
            self._keep(_NO_CHOICES)
            return
        choice = choices[0]
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        if text and isinstance(text, str):
            self._check()
            self._keep(text)
        elif not self.started or choice.get("finish_reason"):
            self._keep(None)

    def _keep(self, kept) -> None:
        self.before_last, self.last = self.last, kept
        self.started = self.started or kept is not _NO_CHOICES

    def _check(self) -> None:
        last, before_last = self.last, self.before_last
        if before_last is _NOTHING or last is _NO_CHOICES or before_last is _NO_CHOICES:
            return  # fewer than two kept, or one of them without choices
        if not isinstance(last, str) or len(last) <= 2:
            self.count = 1
            return
        self.count = self.count + 1 if last == before_last else 1
        if self.count >= self.limit:
            raise litellm.InternalServerError(message=f"The model is repeating the same chunk = {last}.",
                                              model="", llm_provider="")


def _stream_error_event(error: Any, response) -> openai.APIError:
    """An `{"error": ...}` event, as the OpenAI client raises it."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=response.request, body=error)


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
