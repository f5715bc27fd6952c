"""Token counting and output clamping (token control, before the call)."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

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


def model_max_output_tokens(litellm_model: str) -> int | None:
    """The model's own output maximum from litellm's price map, if it knows the model."""
    entry = litellm.model_cost.get(litellm_model)
    if entry is None and "/" in litellm_model:
        entry = litellm.model_cost.get(litellm_model.split("/", 1)[1])
    value = (entry or {}).get("max_output_tokens")
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def clamp_max_tokens(*, requested: int | None, default: int, deployment_max: int, key_max: int | None = None,
                     org_max: int | None = None, model_max: int | None = None) -> int:
    """The max_tokens actually sent upstream: the request's (or the default), never
    above the key's, the org's or the deployment's limit, nor the model's own
    maximum. A request asking for more is served with the clamp, not refused."""
    limits = [requested or default, deployment_max]
    limits += [limit for limit in (key_max, org_max, model_max) if limit]
    return min(limits)


@dataclass
class FittedPrompt:
    messages: list[dict]
    prompt_tokens: int
    removed_tokens: int = 0  # tokens of the turns dropped by truncation
    removed_messages: int = 0


class PromptTooLong(Exception):
    """Even the system prompt and the newest turn (`minimal`, `needed` tokens) exceed the room."""

    def __init__(self, needed: int, room: int, minimal: list[dict]) -> None:
        super().__init__(needed, room)
        self.needed, self.room, self.minimal = needed, room, minimal


def _fit(model: str, messages: list[dict], prompt_tokens: int, room: int) -> FittedPrompt:
    if prompt_tokens <= room:
        return FittedPrompt(messages, prompt_tokens)
    # Keep every system message and the newest turns; drop the oldest other turns
    # until the rest fits. The last message (the question being asked) always stays.
    droppable = [i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"]
    keep = set(range(len(messages)))
    for index in droppable:
        keep.discard(index)
        kept = [m for i, m in enumerate(messages) if i in keep]
        tokens = _count_messages(model, kept)
        if tokens <= room:
            return FittedPrompt(kept, tokens, prompt_tokens - tokens, len(messages) - len(kept))
    minimal = [m for i, m in enumerate(messages) if i in keep]
    raise PromptTooLong(_count_messages(model, minimal), room, minimal)


async def fit_prompt(model: str, messages: list[dict], prompt_tokens: int, room: int) -> FittedPrompt:
    """Truncate a prompt to at most `room` tokens, keeping the system prompt and the
    newest turns; PromptTooLong if even those do not fit. Counting runs off the
    event loop when there is truncating to do."""
    if prompt_tokens <= room:
        return FittedPrompt(messages, prompt_tokens)
    return await asyncio.to_thread(_fit, model, messages, prompt_tokens, room)
