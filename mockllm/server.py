"""The mock LLM's HTTP server (aiohttp.web): an OpenAI-compatible chat completions API.

Endpoints:

* ``POST /v1/chat/completions`` -- streaming (SSE) and non-streaming chat completions,
  behaviour chosen per request by directives (see ``directives.py``).
* ``GET /v1/models`` -- an OpenAI model list.
* ``GET /healthz`` -- ``{"status": "ok", "ready": bool}`` (ready: the prompt token counter,
  litellm, is loaded; it is imported in a background thread at startup).
* ``GET /_mock/events[?tag=X]`` -- request records without the messages;
  ``GET /_mock/requests[?tag=X]`` -- the same with the messages; ``DELETE`` on either
  clears all records.

The server never imports Django. litellm is imported lazily (in a background thread, with
``LITELLM_LOCAL_MODEL_COST_MAP=True`` so it never touches the network) for
``litellm.token_counter``, so the prompt token count matches the gateway's own count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections import deque
from itertools import islice, repeat
from typing import Any, Callable, Iterator

from aiohttp import web

from . import directives as directives_mod
from . import textgen

log = logging.getLogger("mockllm")

# A fake secret that fault responses deliberately contain: the gateway must never forward
# upstream error text to its clients, and tests elsewhere look for this string.
LEAKED_SECRET = "sk-mock-LEAKED-0000-SECRET"

POLL_INTERVAL = 0.01  # seconds between "is the client still there?" checks while waiting
MAX_RECORDS = 10_000
LARGE_PROMPT_CHARS = 20_000  # count larger prompts' tokens off the event loop
TOKEN_COUNT_MODEL = "gpt-3.5-turbo"
MODELS = ("mock-fast", "mock-slow", "gpt-4-turbo", "claude-3-opus")

OUTCOMES = ("completed", "length", "client_gone", "cut", "error", "hung_client_gone")

# fault=repeat: every content chunk is this text. Over two characters, because litellm's guard
# against a model repeating itself ignores shorter chunks.
REPEATED_CHUNK = " again"


class _ClientGone(Exception):
    """Raised by the waits when the client's connection is closing or gone."""


# --------------------------------------------------------------------------- tokenizer


class PromptCounter:
    """Counts prompt tokens with ``litellm.token_counter``, imported in the background.

    Importing litellm takes seconds, so the server listens at once and handlers await
    readiness. If litellm cannot be imported, a rough estimate (characters / 4) is used.
    """

    def __init__(self) -> None:
        self._future: asyncio.Future | None = None
        self._fn: Callable[..., int] | None = None
        self._loaded = False

    @property
    def ready(self) -> bool:
        return self._future is not None and self._future.done()

    def start(self) -> None:
        if self._future is not None:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        self._future = future

        def resolve(fn: Callable[..., int] | None) -> None:
            if not future.done():
                future.set_result(fn)

        def work() -> None:
            fn = None
            try:
                os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
                import litellm  # noqa: PLC0415 (deliberately lazy: slow import)

                if hasattr(litellm, "disable_hf_tokenizer_download"):
                    litellm.disable_hf_tokenizer_download = True
                fn = litellm.token_counter
                fn(model=TOKEN_COUNT_MODEL, messages=[{"role": "user", "content": "warm up"}])
            except Exception as exc:  # pragma: no cover - depends on the environment
                log.warning("mockllm: litellm unavailable (%s); estimating prompt tokens", exc)
                fn = None
            try:
                loop.call_soon_threadsafe(resolve, fn)
            except RuntimeError:  # loop closed (shutting down)
                pass

        threading.Thread(target=work, name="mockllm-litellm-import", daemon=True).start()

    async def wait_ready(self) -> None:
        if self._future is None:
            self.start()
        assert self._future is not None
        # shield: a cancelled request must not cancel the shared future
        self._fn = await asyncio.shield(self._future)
        self._loaded = True

    @staticmethod
    def _estimate(messages: list) -> int:
        chars = sum(len(t) for t in directives_mod.message_texts(messages))
        return 3 + 4 * len(messages) + chars // 4

    def _count(self, messages: list) -> int:
        fn = self._fn
        if fn is None:
            return self._estimate(messages)
        try:
            return int(fn(model=TOKEN_COUNT_MODEL, messages=messages))
        except Exception as exc:
            log.warning("mockllm: token_counter failed (%s); estimating", exc)
            return self._estimate(messages)

    async def count(self, messages: list) -> int:
        if not self._loaded:
            await self.wait_ready()
        size = sum(len(t) for t in directives_mod.message_texts(messages))
        if size > LARGE_PROMPT_CHARS:
            return await asyncio.get_running_loop().run_in_executor(None, self._count, messages)
        return self._count(messages)


# ------------------------------------------------------------------------------ state


class MockState:
    def __init__(self, *, rate: float, ttft_ms: float, default_tokens: int) -> None:
        self.rate = float(rate)
        self.ttft_ms = float(ttft_ms)
        self.default_tokens = int(default_tokens)
        self.records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self.counter = PromptCounter()


STATE = web.AppKey("mockllm_state", MockState)


# ---------------------------------------------------------------------------- helpers


def _json_response(data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data, default=str).encode(),
        content_type="application/json",
        headers=headers,
    )


def error_response(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    headers: dict | None = None,
) -> web.Response:
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""
    return _json_response(
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        status=status,
        headers=headers,
    )


def _client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _sleep_until(request: web.BaseRequest, deadline: float) -> None:
    """Sleep until loop time ``deadline``, checking the client every POLL_INTERVAL."""
    loop = asyncio.get_running_loop()
    while True:
        if _client_gone(request):
            raise _ClientGone
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        await asyncio.sleep(remaining if remaining < POLL_INTERVAL else POLL_INTERVAL)


async def _flush(request: web.BaseRequest, timeout: float = 1.0) -> None:
    """Wait (briefly) until the transport's write buffer is empty."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() == 0:
            return
        await asyncio.sleep(0.001)


def _fault_response(d: directives_mod.Directives) -> web.Response:
    fault = d.fault
    if fault == "429":
        return error_response(
            429,
            f"Rate limit reached for requests made with key {LEAKED_SECRET} "
            f"(mock fault=429). Please try again in {d.retry_after}s.",
            "requests",
            "rate_limit_exceeded",
            headers={"Retry-After": str(d.retry_after)},
        )
    if fault in directives_mod.CONTENT_FAULTS:
        return error_response(
            int(fault),
            f"The mock upstream refused this request's content (fault={fault}); key {LEAKED_SECRET}.",
            "invalid_request_error",
            "invalid_request",
        )
    if fault == "503":
        return error_response(
            503,
            f"The mock upstream is overloaded (fault=503); key {LEAKED_SECRET}.",
            "server_error",
            "service_unavailable",
        )
    return error_response(
        500,
        f"The mock upstream had an internal error (fault=500); key {LEAKED_SECRET}.",
        "server_error",
        "internal_error",
    )


def _pieces(d: directives_mod.Directives, seed: int) -> Iterator[str]:
    """The response's content chunks, endless: the seed's text, or with fault=repeat one
    chunk over and over (a model stuck in a loop)."""
    if d.fault == "repeat":
        return repeat(REPEATED_CHUNK)
    return textgen.iter_chunks(seed)


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "messages"}


# --------------------------------------------------------------------------- handlers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    rid = "chatcmpl-mock-" + uuid.uuid4().hex
    record: dict[str, Any] = {
        "id": rid,
        "tag": None,
        "model": None,
        "stream": False,
        "max_tokens": None,
        "messages": None,
        "directives": {},
        "received_at": time.time(),
        "first_chunk_at": None,
        "ended_at": None,
        "outcome": None,
        "chunks_sent": 0,
        "client_gone_at": None,
        "status": None,
        "prompt_tokens": None,
        "finish_reason": None,
        "usage_sent": False,
        "params": None,
    }
    state.records.append(record)

    def fail(resp: web.Response) -> web.Response:
        record["status"] = resp.status
        record["outcome"] = "error"
        record["ended_at"] = time.time()
        return resp

    # ---- parse and validate (auth errors win over body errors)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        return fail(error_response(413, f"request body too large: {exc.text}"))
    except (ConnectionError, asyncio.CancelledError):
        record["client_gone_at"] = time.time()
        record["outcome"] = "client_gone"
        record["ended_at"] = record["client_gone_at"]
        raise

    body_error: str | None = None
    body: Any = None
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError) as exc:
        body_error = f"We could not parse the JSON body of your request ({exc})."
    if body_error is None and not isinstance(body, dict):
        body_error = "The request body must be a JSON object."
    messages = body.get("messages") if isinstance(body, dict) else None
    if body_error is None:
        if not isinstance(messages, list) or not messages:
            body_error = "'messages' is required and must be a non-empty array."
        elif not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            body_error = "Each message must be an object with a string 'role'."
    model = body.get("model") if isinstance(body, dict) else None
    if body_error is None and (not isinstance(model, str) or not model):
        body_error = "You must provide a model parameter ('model' must be a non-empty string)."
    max_tokens = None
    if body_error is None:
        max_tokens = body.get("max_completion_tokens")
        if max_tokens is None:
            max_tokens = body.get("max_tokens")
        if max_tokens is not None and (
            not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
        ):
            body_error = f"'max_tokens' must be an integer >= 1 (got {max_tokens!r})."
            max_tokens = None
    if isinstance(body, dict):
        record["model"] = model if isinstance(model, str) else None
        record["stream"] = bool(body.get("stream"))
        record["max_tokens"] = max_tokens
        record["messages"] = messages if isinstance(messages, list) else None
        # Everything else the client sent (model, stream, stream_options, max_tokens,
        # temperature...): tests compare how two clients built the same request.
        record["params"] = {k: v for k, v in body.items() if k != "messages"}

    d: directives_mod.Directives | None = None
    directive_error: str | None = None
    if body_error is None:
        try:
            d = directives_mod.from_request(
                messages,
                request.headers.get(directives_mod.HEADER_NAME),
                rate=state.rate,
                ttft_ms=state.ttft_ms,
                default_tokens=state.default_tokens,
            )
            record["tag"] = d.tag
            record["directives"] = d.explicit
        except directives_mod.DirectiveError as exc:
            directive_error = str(exc)

    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return fail(
            error_response(
                401,
                "You didn't provide an API key. Send 'Authorization: Bearer <key>' "
                "(any key works with the mock).",
                "invalid_request_error",
                "invalid_api_key",
            )
        )
    if body_error is not None:
        return fail(error_response(400, body_error, "invalid_request_error", "invalid_request"))
    if directive_error is not None:
        return fail(
            error_response(400, directive_error, "invalid_request_error", "invalid_mock_directive")
        )
    assert d is not None and isinstance(body, dict) and isinstance(model, str)

    if d.fault in directives_mod.ERROR_FAULTS or (d.fault == "stream_error" and not body.get("stream")):
        return fail(_fault_response(d))

    stream = bool(body.get("stream"))
    stream_options = body.get("stream_options")
    include_usage = (
        stream
        and isinstance(stream_options, dict)
        and bool(stream_options.get("include_usage"))
        and not d.omit_usage
    )

    n = d.tokens
    finish_reason: str | None = "stop"
    if max_tokens is not None and max_tokens < n and not d.ignore_max_tokens:
        n = max_tokens
        finish_reason = "length"
    if d.fault == "no_finish":
        finish_reason = None  # the response ends, cleanly, without saying why
    elif d.fault in ("finish_abort", "finish_error"):
        finish_reason = d.fault.removeprefix("finish_")  # a provider's own "abort" or "error"
    seed = d.seed if d.seed is not None else textgen.seed_for_messages(messages)
    first_at = t0 + d.ttft_ms / 1000.0
    interval = 1.0 / d.rate if d.rate > 0 else 0.0

    resp: web.StreamResponse | None = None
    phase = "wait"  # "hang" while deliberately hanging (hang / stall)
    try:
        record["prompt_tokens"] = prompt_tokens = await state.counter.count(messages)
        if stream:
            resp = web.StreamResponse(
                status=200,
                headers={
                    "Content-Type": "text/event-stream; charset=utf-8",
                    "Cache-Control": "no-cache",
                    "X-Request-Id": rid,
                },
            )
            await resp.prepare(request)
            record["status"] = 200
            await _stream(request, resp, record, d, model, rid, n, finish_reason, seed,
                          first_at, interval, include_usage, prompt_tokens)
            return resp
        # ---- non-streaming
        if d.fault == "hang":
            phase = "hang"
            await _sleep_until(request, math.inf)
        last_at = first_at + max(0, n - 1) * interval
        if d.fault == "cut":
            await _sleep_until(request, first_at + max(0, min(d.cut_after, n) - 1) * interval)
            record["outcome"] = "cut"
            record["ended_at"] = time.time()
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)  # never sent: the transport is gone
        if d.fault == "stall":
            await _sleep_until(request, first_at + max(0, min(d.stall_after, n) - 1) * interval)
            phase = "hang"
            await _sleep_until(request, math.inf)
        await _sleep_until(request, last_at)
        content = "".join(islice(_pieces(d, seed), n))
        payload: dict[str, Any] = {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
        }
        if not d.omit_usage:
            payload["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": n,
                "total_tokens": prompt_tokens + n,
            }
            record["usage_sent"] = True
        now = time.time()
        record.update(
            status=200,
            first_chunk_at=now,
            ended_at=now,
            chunks_sent=n,
            finish_reason=finish_reason,
            outcome="length" if finish_reason == "length" else "completed",
        )
        return _json_response(payload)
    except _ClientGone:
        _mark_gone(record, "hung_client_gone" if phase == "hang" else "client_gone")
        return resp if resp is not None else web.Response(status=499)
    except asyncio.CancelledError:
        _mark_gone(record, "hung_client_gone" if phase == "hang" else "client_gone")
        raise
    except Exception:
        if record["outcome"] is None:
            record["outcome"] = "error"
            record["ended_at"] = time.time()
        if resp is None or not resp.prepared:
            raise  # the middleware answers 500 with an OpenAI-style error
        # Headers already sent: a second response cannot follow; drop the connection.
        log.exception("mockllm: unexpected error while streaming %s", rid)
        if request.transport is not None:
            request.transport.abort()
        return resp


def _mark_gone(record: dict[str, Any], outcome: str) -> None:
    """Stamp the client's departure (once); set the outcome unless already final."""
    now = time.time()
    if record["client_gone_at"] is None:
        record["client_gone_at"] = now
    if record["outcome"] is None:
        record["outcome"] = outcome
        record["ended_at"] = now


_JSON_CACHE: dict[str, bytes] = {}


def _content_json(piece: str) -> bytes:
    b = _JSON_CACHE.get(piece)
    if b is None:
        b = json.dumps(piece).encode()
        if len(_JSON_CACHE) < 10_000:
            _JSON_CACHE[piece] = b
    return b


async def _stream(
    request: web.BaseRequest,
    resp: web.StreamResponse,
    record: dict[str, Any],
    d: directives_mod.Directives,
    model: str,
    rid: str,
    n: int,
    finish_reason: str | None,
    seed: int,
    first_at: float,
    interval: float,
    include_usage: bool,
    prompt_tokens: int,
) -> None:
    """Write the SSE stream. Records the outcome; client-gone cases are stamped here."""
    created = int(time.time())
    head = (
        'data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,'
        '"choices":[{"index":0,"delta":' % (json.dumps(rid), created, json.dumps(model))
    ).encode()
    tail = b',"logprobs":null,"finish_reason":null}]}\n\n'
    role_chunk = head + b'{"role":"assistant","content":""}' + tail
    content_head = head + b'{"content":'
    content_tail = b"}" + tail

    limit = n
    if d.fault in ("cut", "stream_error"):
        limit = min(d.cut_after, n)
    elif d.fault == "stall":
        limit = min(d.stall_after, n)
    hang = d.fault in ("hang", "stall")

    sent = 0
    try:
        if d.fault == "hang":
            raise _Hang
        await _sleep_until(request, first_at)
        chunks = _pieces(d, seed)
        for i in range(limit):
            piece = next(chunks)
            data = content_head + _content_json(piece) + content_tail
            if i == 0:
                await resp.write(role_chunk + data)
                record["first_chunk_at"] = time.time()
            else:
                if interval:
                    await _sleep_until(request, first_at + i * interval)
                elif i % 32 == 0:
                    await asyncio.sleep(0)
                    if _client_gone(request):
                        raise _ClientGone
                await resp.write(data)
            sent += 1
            record["chunks_sent"] = sent
        if d.fault == "cut":
            await _flush(request)
            record["outcome"] = "cut"
            record["ended_at"] = time.time()
            if request.transport is not None:
                request.transport.abort()
            return
        if hang:
            raise _Hang
        if d.fault == "stream_error":
            # As OpenAI does when generation fails midway: an error object as the
            # stream's last event, after a 200 and some tokens; no finish, no [DONE].
            error = {"error": {"message": f"The mock upstream failed midway (fault=stream_error); key "
                               f"{LEAKED_SECRET}.", "type": "server_error", "param": None, "code": None}}
            await resp.write(b"data: " + json.dumps(error).encode() + b"\n\n")
            record["outcome"] = "error"
            record["ended_at"] = time.time()
            return
        final = b""  # fault=no_finish: no chunk with a finish reason (nor the role chunk it would carry)
        if finish_reason is not None:
            final = head + b"{}" + (b',"logprobs":null,"finish_reason":"%s"}]}\n\n' % finish_reason.encode())
            if limit == 0:
                final = role_chunk + final
                record["first_chunk_at"] = time.time()
        if include_usage:
            usage = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": sent,
                    "total_tokens": prompt_tokens + sent,
                },
            }
            final += b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n"
        final += b"data: [DONE]\n\n"
        await resp.write(final)
        record["usage_sent"] = include_usage
        record["finish_reason"] = finish_reason
        record["outcome"] = "length" if finish_reason == "length" else "completed"
        record["ended_at"] = time.time()
    except _Hang:
        try:
            await _sleep_until(request, math.inf)
        except _ClientGone:
            _mark_gone(record, "hung_client_gone")
        except asyncio.CancelledError:
            _mark_gone(record, "hung_client_gone")
            raise
    except (_ClientGone, ConnectionError):
        _mark_gone(record, "client_gone")
    except asyncio.CancelledError:
        _mark_gone(record, "client_gone")
        raise


class _Hang(Exception):
    """Internal: switch to hanging until the client goes away."""


async def list_models(request: web.Request) -> web.Response:
    created = 1_700_000_000
    return _json_response(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "mock"}
                for m in MODELS
            ],
        }
    )


async def healthz(request: web.Request) -> web.Response:
    return _json_response({"status": "ok", "ready": request.app[STATE].counter.ready})


def _filtered(request: web.Request) -> list[dict[str, Any]]:
    tag = request.query.get("tag")
    records = list(request.app[STATE].records)
    if tag is not None:
        records = [r for r in records if r["tag"] == tag]
    return records


async def get_events(request: web.Request) -> web.Response:
    return _json_response([_public(r) for r in _filtered(request)])


async def get_requests(request: web.Request) -> web.Response:
    return _json_response(_filtered(request))


async def clear_records(request: web.Request) -> web.Response:
    request.app[STATE].records.clear()
    return _json_response({"cleared": True})


@web.middleware
async def _errors_as_json(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(
            exc.status, "invalid_request"
        )
        return error_response(exc.status, f"{exc.reason}: {request.method} {request.path}",
                              "invalid_request_error", code)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("mockllm: unexpected error handling %s %s", request.method, request.path)
        return error_response(500, "mock internal error", "server_error", "internal_error")


async def _on_startup(app: web.Application) -> None:
    app[STATE].counter.start()


def build_app(*, rate: float, ttft_ms: float, default_tokens: int) -> web.Application:
    """The mock's aiohttp application (server defaults for rate, TTFT and tokens)."""
    if rate < 0 or ttft_ms < 0 or default_tokens < 0:
        raise ValueError("rate, ttft_ms and default_tokens must be >= 0")
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[_errors_as_json])
    app[STATE] = MockState(rate=rate, ttft_ms=ttft_ms, default_tokens=default_tokens)
    app.on_startup.append(_on_startup)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_mock/events", get_events)
    app.router.add_delete("/_mock/events", clear_records)
    app.router.add_get("/_mock/requests", get_requests)
    app.router.add_delete("/_mock/requests", clear_records)
    return app


async def serve(
    host: str = "127.0.0.1",
    port: int = 8100,
    *,
    rate: float = 50.0,
    ttft_ms: float = 100.0,
    default_tokens: int = 24,
    stop_event: asyncio.Event | None = None,
    announce: Callable[[str], None] | None = None,
    handle_signals: bool = True,
) -> None:
    """Run the mock until ``stop_event`` is set (or SIGTERM/SIGINT when handle_signals).

    Once listening, calls ``announce("mockllm listening on http://HOST:PORT")`` (default:
    print it to stdout and flush). ``port=0`` picks a free port.
    """
    app = build_app(rate=rate, ttft_ms=ttft_ms, default_tokens=default_tokens)
    runner = web.AppRunner(
        app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
    )
    await runner.setup()
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[int] = []
    try:
        site = web.TCPSite(runner, host, port, backlog=2048)
        await site.start()
        actual_port = port
        for address in runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                actual_port = address[1]
                break
        url_host = f"[{host}]" if ":" in host else host
        line = f"mockllm listening on http://{url_host}:{actual_port}"
        if announce is None:
            print(line, flush=True)
        else:
            announce(line)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, stop.set)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
