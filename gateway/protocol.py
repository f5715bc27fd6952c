"""WebSocket protocol v1: every frame's schema, every error code and close code.

Frames from the client are parsed and validated here into typed objects;
frames to the client are built here. Nothing else in the project knows the
wire format. docs/protocol.md is the human-readable contract.
"""
from __future__ import annotations

import json
import re
from enum import IntEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

PROTOCOL_VERSION = 1


class ErrorCode(IntEnum):
    BAD_REQUEST = 400
    UNAUTHORIZED = 401
    BUDGET_EXHAUSTED = 402
    FORBIDDEN = 403
    NOT_FOUND = 404
    CONFLICT = 409
    FRAME_TOO_LARGE = 413
    RATE_LIMITED = 429
    INTERNAL = 500
    UPSTREAM_ERROR = 502
    NO_HEALTHY_DEPLOYMENT = 503
    UPSTREAM_TIMEOUT = 504


# The short machine-readable name sent in the `error` field of an error frame.
ERROR_NAMES: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "bad_request",
    ErrorCode.UNAUTHORIZED: "unauthorized",
    ErrorCode.BUDGET_EXHAUSTED: "budget_exhausted",
    ErrorCode.FORBIDDEN: "forbidden",
    ErrorCode.NOT_FOUND: "not_found",
    ErrorCode.CONFLICT: "conflict",
    ErrorCode.FRAME_TOO_LARGE: "frame_too_large",
    ErrorCode.RATE_LIMITED: "rate_limited",
    ErrorCode.INTERNAL: "internal_error",
    ErrorCode.UPSTREAM_ERROR: "upstream_error",
    ErrorCode.NO_HEALTHY_DEPLOYMENT: "no_healthy_deployment",
    ErrorCode.UPSTREAM_TIMEOUT: "upstream_timeout",
}
# A 429 with its own name: a budget's room is held by reservations of requests in
# flight (not used up; retry after `retry_after_ms`). Other 429s are `rate_limited`.
BUDGET_BUSY = "budget_busy"


class CloseCode(IntEnum):
    GOING_AWAY = 1001
    INTERNAL_ERROR = 1011
    AUTH_FAILED = 4401
    ORIGIN_NOT_ALLOWED = 4403
    AUTH_TIMEOUT = 4408
    FRAME_TOO_LARGE = 4413
    TOO_MANY_CONNECTIONS = 4429


class GatewayError(Exception):
    """An error the client is told about in an `error` frame."""

    def __init__(self, code: ErrorCode, message: str, *, request_id: str | None = None,
                 retryable: bool = False, retry_after_ms: int | None = None, name: str | None = None):
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.request_id = request_id
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
        self.name = name  # the `error` name, when not the code's own (BUDGET_BUSY)

    def frame(self) -> dict[str, Any]:
        return error_frame(self.code, self.message, request_id=self.request_id,
                           retryable=self.retryable, retry_after_ms=self.retry_after_ms, name=self.name)


# --- Client -> server frames -------------------------------------------------------

RequestId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Frame(BaseModel):
    # Unknown optional fields are ignored (forward compatibility); types are
    # strict ("500" is not a number of tokens).
    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)


class AuthFrame(_Frame):
    type: Literal["auth"]
    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class ChatMessage(_Frame):
    role: Literal["system", "user", "assistant"]
    content: str
    name: Annotated[str, StringConstraints(max_length=64)] | None = None


class Parameters(_Frame):
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: int | None = None
    stream: bool = True


class Metadata(_Frame):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    user_id: Annotated[str, StringConstraints(max_length=200)] | None = None
    priority: Annotated[str, StringConstraints(max_length=32)] | None = None
    tags: Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=32)] = []


class LlmRequestFrame(_Frame):
    type: Literal["llm_request"]
    request_id: RequestId | None = None
    model: ModelName
    prompt: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    system: str | None = None
    session_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    parameters: Parameters = Parameters()
    metadata: Metadata = Metadata()

    @model_validator(mode="after")
    def _one_kind_of_input(self):
        if self.prompt is None and self.messages is None:
            raise ValueError("give either 'prompt' or 'messages'")
        if self.prompt is not None and self.messages is not None:
            raise ValueError("give either 'prompt' or 'messages', not both")
        if self.prompt is not None and not self.prompt.strip():
            raise ValueError("'prompt' must not be empty")
        return self

    def chat_messages(self) -> list[dict[str, str]]:
        """The conversation sent upstream: system prompt first, then the turns."""
        out: list[dict[str, str]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        if self.prompt is not None:
            out.append({"role": "user", "content": self.prompt})
        else:
            for message in self.messages or ():
                item = {"role": message.role, "content": message.content}
                if message.name:
                    item["name"] = message.name
                out.append(item)
        return out


class CancelFrame(_Frame):
    type: Literal["cancel"]
    request_id: RequestId


class PingFrame(_Frame):
    type: Literal["ping"]


ClientFrame = Union[AuthFrame, LlmRequestFrame, CancelFrame, PingFrame]
_FRAME_TYPES: dict[str, type[_Frame]] = {
    "auth": AuthFrame,
    "llm_request": LlmRequestFrame,
    "cancel": CancelFrame,
    "ping": PingFrame,
}


# --- Text accepted from clients ---------------------------------------------------
#
# Every string a client sends (every value and every object key, known fields and
# ignored ones alike) passes through `unstorable_text` before anything else reads
# the frame: the one place that decides which text the gateway accepts. Any
# Unicode text is accepted and stored faithfully, except
#   - NUL (U+0000): PostgreSQL cannot store it in `text` or `jsonb`, so a usage
#     record carrying it could never be written;
#   - lone surrogates (U+D800-U+DFFF not in a pair, which JSON's \uXXXX escapes can
#     express): they are not Unicode scalar values, cannot be encoded as UTF-8 and
#     so can be neither stored, nor sent upstream, nor echoed in a frame.

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL (U+0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "must not contain a lone surrogate (U+D800 to U+DFFF); send well-formed Unicode"
    return None


def storable(text: str) -> str:
    """Text from elsewhere (a provider's response id) made storable: NUL dropped, lone
    surrogates replaced. Client text is refused instead (`unstorable_text`)."""
    if _text_problem(text) is None:
        return text
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _shown(path: str) -> str:
    return path if len(path) <= 120 else path[:119] + "…"


def unstorable_text(value: Any) -> str | None:
    """Describe the first string in a decoded JSON value that the gateway refuses, naming
    where it is ("metadata.user_id: must not contain NUL (U+0000)"), or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"{_shown(path) or 'frame'}: {problem}"
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                problem = _text_problem(key)
                if problem:
                    # The key itself cannot be shown as it is: escape it.
                    return f"{_shown(path) + ': a key' if path else 'a key'} ({ascii(key)[:60]}) {problem}"
                children.append((f"{path}.{key}" if path else key, child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}.{index}", child) for index, child in enumerate(item)]))
    return None


def parse_client_frame(text: str) -> ClientFrame:
    """Parse one text frame or raise GatewayError(400) with a message naming the problem."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise GatewayError(ErrorCode.BAD_REQUEST, "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise GatewayError(ErrorCode.BAD_REQUEST, "frame must be a JSON object")
    frame_type = raw.get("type")
    # Echoed in the error frame only when it is a valid id: a client's bad text is
    # never sent back as it came.
    request_id = raw.get("request_id")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        request_id = None
    problem = unstorable_text(raw)
    if problem:
        raise GatewayError(ErrorCode.BAD_REQUEST, problem, request_id=request_id)
    if not isinstance(frame_type, str):
        raise GatewayError(ErrorCode.BAD_REQUEST, "frame needs a string 'type'", request_id=request_id)
    schema = _FRAME_TYPES.get(frame_type)
    if schema is None:
        raise GatewayError(
            ErrorCode.BAD_REQUEST,
            f"unknown frame type {frame_type[:40]!r}; expected one of: {', '.join(_FRAME_TYPES)}",
            request_id=request_id,
        )
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise GatewayError(ErrorCode.BAD_REQUEST, _describe(exc), request_id=request_id) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:3]:
        location = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}" if location else message)
    return "; ".join(problems)


# --- Server -> client frames -------------------------------------------------------

# The JSON string encoder `json.dumps(..., ensure_ascii=False)` itself uses (C when available).
_json_string = json.encoder.encode_basestring


def encode(frame: dict[str, Any]) -> str:
    if frame.get("type") == "llm_token" and len(frame) == 4:
        # One per token: spelled out, the same text json.dumps gives (tested), in a third of its time.
        request_id, seq, content = frame.get("request_id"), frame.get("seq"), frame.get("content")
        if type(request_id) is str and type(seq) is int and type(content) is str:
            text = (f'{{"type":"llm_token","request_id":{_json_string(request_id)},"seq":{seq},'
                    f'"content":{_json_string(content)}}}')
            return text if text.isascii() else _utf8_safe(text, frame)
    text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    return text if text.isascii() else _utf8_safe(text, frame)


def _utf8_safe(text: str, frame: dict[str, Any]) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate from upstream (a provider may send "\ud800" in its
        # JSON): the ASGI server could not encode the frame and would drop the
        # connection. JSON's own escape carries it faithfully instead.
        text = json.dumps(frame, separators=(",", ":"))
    return text


def auth_ok_frame(*, org: str, key_prefix: str, limits: dict[str, int],
                  budget: dict[str, Any] | None = None) -> dict[str, Any]:
    frame = {"type": "auth_ok", "protocol": PROTOCOL_VERSION, "org": org, "key": key_prefix, "limits": limits}
    if budget is not None:
        frame["budget"] = budget  # only when the org enables it (docs/budgets.md)
    return frame


def pong_frame() -> dict[str, Any]:
    return {"type": "pong"}


def response_start_frame(*, request_id: str, model: str, route: dict[str, Any], prompt_tokens: int,
                         max_tokens: int, truncated: bool, truncated_tokens: int = 0) -> dict[str, Any]:
    frame = {"type": "llm_response_start", "request_id": request_id, "model": model, "route": route,
             "prompt_tokens": prompt_tokens, "max_tokens": max_tokens, "truncated": truncated}
    if truncated:
        frame["truncated_tokens"] = truncated_tokens  # prompt tokens removed (oldest turns)
    return frame


def token_frame(*, request_id: str, seq: int, content: str) -> dict[str, Any]:
    return {"type": "llm_token", "request_id": request_id, "seq": seq, "content": content}


def response_end_frame(*, request_id: str, finish_reason: str, prompt_tokens: int, completion_tokens: int,
                       cost_usd: str, first_token_ms: int | None, total_ms: int,
                       budget: dict[str, Any] | None = None) -> dict[str, Any]:
    frame = {
        "type": "llm_response_end",
        "request_id": request_id,
        "finish_reason": finish_reason,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "cost_usd": cost_usd,
        "latency_ms": {"first_token": first_token_ms, "total": total_ms},
    }
    if budget is not None:
        frame["budget"] = budget
    return frame


def error_frame(code: ErrorCode, message: str, *, request_id: str | None = None, retryable: bool = False,
                retry_after_ms: int | None = None, name: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error"}
    if request_id is not None:
        frame["request_id"] = request_id
    frame.update(code=int(code), error=name or ERROR_NAMES[ErrorCode(code)], message=message, retryable=retryable)
    if retry_after_ms is not None:
        frame["retry_after_ms"] = retry_after_ms
    return frame
