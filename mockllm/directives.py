"""Per-request directives for the mock LLM (pure functions, no I/O).

A request chooses its own behaviour, so one running mock serves every test:

* in message text: ``[[mock key=value key=value flag]]`` (every message is scanned, in
  order; a later directive overrides an earlier one, also within one message);
* in the HTTP header ``X-Mock-Directives: key=value ...`` (lowest precedence).

Keys (see ``KEYS``): ``tokens``, ``rate``, ``ttft_ms``, ``fault``, ``retry_after``,
``cut_after``, ``stall_after``, ``usage``, ``tag``, ``seed``, ``max_tokens`` (``honor`` or
``ignore``). Flags (bare words) are shorthands: ``hang`` = ``fault=hang``, ``cut`` =
``fault=cut``, ``stall`` = ``fault=stall``, ``no_finish`` = ``fault=no_finish``,
``repeat`` = ``fault=repeat``, ``no_usage`` = ``usage=omit``, ``overrun`` =
``max_tokens=ignore``. An unknown key or flag, or a bad value, raises
``DirectiveError`` (the server answers HTTP 400 with its message).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

HEADER_NAME = "X-Mock-Directives"

# ``[[mock]]`` or ``[[mock <body>]]``; the body cannot contain brackets.
DIRECTIVE_RE = re.compile(r"\[\[mock(?:\s+([^\[\]]*?))?\s*\]\]")

FAULTS = ("500", "503", "429", "400", "413", "422", "cut", "hang", "stall", "stream_error", "no_finish",
          "repeat", "finish_abort", "finish_error")
ERROR_FAULTS = frozenset({"500", "503", "429", "400", "413", "422"})
# Refusals of the request's content (as a provider gives for a malformed or too large request).
CONTENT_FAULTS = frozenset({"400", "413", "422"})
USAGE_VALUES = ("omit", "include")

FLAGS: dict[str, tuple[str, str]] = {
    "hang": ("fault", "hang"),
    "cut": ("fault", "cut"),
    "stall": ("fault", "stall"),
    "no_finish": ("fault", "no_finish"),
    "repeat": ("fault", "repeat"),
    "no_usage": ("usage", "omit"),
    "overrun": ("max_tokens", "ignore"),
}

MAX_TOKENS_DIRECTIVE = 1_000_000
_INT_RE = re.compile(r"^[+-]?\d{1,18}$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_.:/@+-]{1,200}$")


class DirectiveError(ValueError):
    """A directive could not be understood; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Directives:
    """The resolved behaviour of one request (server defaults filled in)."""

    tokens: int
    rate: float
    ttft_ms: float
    fault: str | None = None
    retry_after: int = 1
    cut_after: int = 3
    stall_after: int = 3
    omit_usage: bool = False
    ignore_max_tokens: bool = False
    tag: str | None = None
    seed: int | None = None
    # Typed values of the keys the request gave explicitly (stored in the request record).
    explicit: dict[str, Any] = field(default_factory=dict)


def _int(key: str, value: str, lo: int | None, hi: int | None) -> int:
    if not _INT_RE.match(value):
        raise DirectiveError(f"mock directive {key}={value!r}: {key} must be an integer")
    n = int(value)
    if lo is not None and n < lo:
        raise DirectiveError(f"mock directive {key}={value!r}: {key} must be >= {lo}")
    if hi is not None and n > hi:
        raise DirectiveError(f"mock directive {key}={value!r}: {key} must be <= {hi}")
    return n


def _number(key: str, value: str, hi: float) -> float:
    try:
        n = float(value)
    except ValueError:
        raise DirectiveError(
            f"mock directive {key}={value!r}: {key} must be a number"
        ) from None
    if not math.isfinite(n) or n < 0:
        raise DirectiveError(
            f"mock directive {key}={value!r}: {key} must be a finite number >= 0"
        )
    if n > hi:
        raise DirectiveError(f"mock directive {key}={value!r}: {key} must be <= {hi:g}")
    return n


def _choice(key: str, value: str, choices: Iterable[str]) -> str:
    v = value.lower()
    if v not in choices:
        raise DirectiveError(
            f"mock directive {key}={value!r}: {key} must be one of {', '.join(choices)}"
        )
    return v


def _tag(key: str, value: str) -> str:
    if not _TAG_RE.match(value):
        raise DirectiveError(
            f"mock directive {key}={value!r}: {key} must be 1-200 characters of "
            "letters, digits and _.:/@+-"
        )
    return value


# key -> validator(key, raw value) -> typed value
KEYS = {
    "tokens": lambda k, v: _int(k, v, 0, MAX_TOKENS_DIRECTIVE),
    "rate": lambda k, v: _number(k, v, 1_000_000.0),
    "ttft_ms": lambda k, v: _number(k, v, 3_600_000.0),
    "fault": lambda k, v: _choice(k, v, FAULTS),
    "retry_after": lambda k, v: _int(k, v, 0, 86_400),
    "cut_after": lambda k, v: _int(k, v, 0, MAX_TOKENS_DIRECTIVE),
    "stall_after": lambda k, v: _int(k, v, 0, MAX_TOKENS_DIRECTIVE),
    "usage": lambda k, v: _choice(k, v, USAGE_VALUES),
    "tag": _tag,
    "seed": lambda k, v: _int(k, v, None, None),
    # honor (default) or ignore the request's max_tokens: a provider that overruns it
    "max_tokens": lambda k, v: _choice(k, v, ("honor", "ignore")),
}


def parse_body(body: str, source: str = "directive") -> dict[str, str]:
    """Split ``key=value key=value flag`` into raw strings (later keys win).

    Keys are case-insensitive; flags are expanded to their key=value. Unknown keys and
    flags raise ``DirectiveError``; values are validated later by ``resolve``.
    """
    out: dict[str, str] = {}
    for word in body.split():
        if "=" in word:
            key, _, value = word.partition("=")
            key = key.strip().lower()
            if key not in KEYS:
                raise DirectiveError(
                    f"unknown mock directive key {key!r} in {source} "
                    f"(known keys: {', '.join(KEYS)}; flags: {', '.join(FLAGS)})"
                )
            if value == "":
                raise DirectiveError(f"mock directive {key!r} in {source} has an empty value")
            out[key] = value
        else:
            flag = word.lower()
            if flag not in FLAGS:
                raise DirectiveError(
                    f"unknown mock directive {word!r} in {source} "
                    f"(known keys: {', '.join(KEYS)}; flags: {', '.join(FLAGS)})"
                )
            key, value = FLAGS[flag]
            out[key] = value
    return out


def message_texts(messages: Any) -> Iterator[str]:
    """Yield the text of each message (string content or text parts of a list)."""
    if not isinstance(messages, list):
        return
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, str):
                    yield part
                elif isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield part["text"]


def collect(messages: Any, header: str | None = None) -> dict[str, str]:
    """Merge the raw directives: header first, then every message in order."""
    merged: dict[str, str] = {}
    if header:
        merged.update(parse_body(header, f"header {HEADER_NAME}"))
    for text in message_texts(messages):
        if "[[mock" not in text:
            continue
        for match in DIRECTIVE_RE.finditer(text):
            merged.update(parse_body(match.group(1) or "", "message text"))
    return merged


def resolve(
    raw: dict[str, str], *, rate: float, ttft_ms: float, default_tokens: int
) -> Directives:
    """Validate raw directive strings and fill the server's defaults."""
    explicit: dict[str, Any] = {}
    for key, value in raw.items():
        validator = KEYS.get(key)
        if validator is None:
            raise DirectiveError(f"unknown mock directive key {key!r}")
        explicit[key] = validator(key, value)
    return Directives(
        tokens=explicit.get("tokens", default_tokens),
        rate=explicit.get("rate", rate),
        ttft_ms=explicit.get("ttft_ms", ttft_ms),
        fault=explicit.get("fault"),
        retry_after=explicit.get("retry_after", 1),
        cut_after=explicit.get("cut_after", 3),
        stall_after=explicit.get("stall_after", 3),
        omit_usage=explicit.get("usage") == "omit",
        ignore_max_tokens=explicit.get("max_tokens") == "ignore",
        tag=explicit.get("tag"),
        seed=explicit.get("seed"),
        explicit=explicit,
    )


def from_request(
    messages: Any,
    header: str | None,
    *,
    rate: float,
    ttft_ms: float,
    default_tokens: int,
) -> Directives:
    """Directives of one request: ``collect`` then ``resolve``."""
    return resolve(
        collect(messages, header), rate=rate, ttft_ms=ttft_ms, default_tokens=default_tokens
    )
