"""Token counting and output clamping (token control, before the call)."""
from __future__ import annotations

from dataclasses import dataclass
from math import isqrt
from typing import Hashable

from catalog.litellm_setup import litellm
from gateway.counting import run_counting

# Counting this much work or less runs inline on the event loop; more goes to the
# counting pool (gateway/counting.py). The unit is a character of text, and each
# message costs as much as _COST_PER_MESSAGE characters: litellm spends about 20 µs
# of Python per message (holding the GIL) and 0.13 µs per character, so 3,000 tiny
# messages (100 KB) take 50-60 ms where one 100 KB message takes 19 ms. 20,000 is
# at most about 2.5 ms on the loop (docs/token-control.md has the measurements).
_COUNT_INLINE_MAX_COST = 20_000
_COST_PER_MESSAGE = 150


def counting_cost(messages: list[dict]) -> int:
    """What counting `messages` costs, in characters' worth of tokenizer work."""
    chars = sum(len(value) for m in messages for value in m.values() if isinstance(value, str))
    return chars + _COST_PER_MESSAGE * len(messages)


def _count_messages(model: str, messages: list[dict[str, str]]) -> int:
    return int(litellm.token_counter(model=model, messages=messages))


async def count_prompt_tokens(model: str, messages: list[dict[str, str]], *, org: Hashable = None) -> int:
    """The prompt's tokens as litellm counts them; a big prompt is counted on the
    counting pool, within `org`'s share of it."""
    if counting_cost(messages) <= _COUNT_INLINE_MAX_COST:
        return _count_messages(model, messages)
    return await run_counting(org, _count_messages, model, messages)


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
    cut = _turns_to_drop(model, messages, droppable, room)
    while True:
        dropped = set(droppable[:cut])
        kept = [m for i, m in enumerate(messages) if i not in dropped]
        # The one recount: prompt_tokens is exactly what litellm counts for what is sent.
        tokens = _count_messages(model, kept)
        if tokens <= room and cut:
            return FittedPrompt(kept, tokens, prompt_tokens - tokens, len(messages) - len(kept))
        if tokens <= room or cut == len(droppable):
            raise PromptTooLong(tokens, room, kept)
        # Only if litellm's counts ever stop adding up per message: drop one more.
        cut += 1


def _turns_to_drop(model: str, messages: list[dict], droppable: list[int], room: int) -> int:
    """The fewest of the oldest droppable turns (at least one) whose dropping brings
    the prompt within `room`, or all of them if none does — the answer of dropping
    one turn at a time and recounting, found with each message counted once.

    litellm counts a list of messages as a fixed reply priming plus each message's
    own tokens (its text, its role and name, a per-message overhead), so the count of
    what is left after a cut is a sum. The droppable turns are counted in about
    sqrt(n) blocks; the block where the running total first fits is then counted a
    message at a time: about 2·sqrt(n) calls to litellm's counter (each call has a
    fixed cost of about 0.1 ms) and every message tokenized once, plus that block."""
    if not droppable:
        return 0
    priming = _count_messages(model, [])

    def own(part: list[dict]) -> int:
        return _count_messages(model, part) - priming

    skip = set(droppable)
    total = priming + own([m for i, m in enumerate(messages) if i not in skip])
    size = max(1, isqrt(len(droppable)))
    blocks = [droppable[start:start + size] for start in range(0, len(droppable), size)]
    block_tokens = [own([messages[i] for i in block]) for block in blocks]
    total += sum(block_tokens)
    dropped = 0
    for block, tokens in zip(blocks, block_tokens):
        if total - tokens > room:  # dropping the whole block is not enough
            total -= tokens
            dropped += len(block)
            continue
        for i in block:
            total -= own([messages[i]])
            dropped += 1
            if total <= room:
                return dropped
    return len(droppable)


async def fit_prompt(model: str, messages: list[dict], prompt_tokens: int, room: int, *,
                     org: Hashable = None) -> FittedPrompt:
    """Truncate a prompt to at most `room` tokens, keeping the system prompt and the
    newest turns; PromptTooLong if even those do not fit. Truncating a big prompt
    runs on the counting pool, within `org`'s share of it."""
    if prompt_tokens <= room:
        return FittedPrompt(messages, prompt_tokens)
    # About twice the work of one count (every message, then what is kept).
    if 2 * counting_cost(messages) <= _COUNT_INLINE_MAX_COST:
        return _fit(model, messages, prompt_tokens, room)
    return await run_counting(org, _fit, model, messages, prompt_tokens, room)
