"""Token counting and output clamping (token control, before the call)."""
from __future__ import annotations

import asyncio

from gateway.providers import litellm

# Prompts longer than this many characters are counted on a worker thread so a
# huge prompt cannot stall every other socket on the event loop.
_COUNT_INLINE_MAX_CHARS = 20_000


def _count_messages(model: str, messages: list[dict[str, str]]) -> int:
    return int(litellm.token_counter(model=model, messages=messages))


async def count_prompt_tokens(model: str, messages: list[dict[str, str]]) -> int:
    size = sum(len(m.get("content") or "") for m in messages)
    if size <= _COUNT_INLINE_MAX_CHARS:
        return _count_messages(model, messages)
    return await asyncio.to_thread(_count_messages, model, messages)


def count_completion_tokens(model: str, text: str) -> int:
    if not text:
        return 0
    return int(litellm.token_counter(model=model, text=text, count_response_tokens=True))


def clamp_max_tokens(*, requested: int | None, default: int, deployment_max: int,
                     key_max: int | None, context_window: int, prompt_tokens: int) -> int:
    """The max_tokens actually sent upstream: the request's (or the default),
    never above the deployment's or the key's limit, nor past the context window."""
    limits = [requested or default, deployment_max, context_window - prompt_tokens]
    if key_max:
        limits.append(key_max)
    return min(limits)
