"""Tokens (gateway/tokens.py): max_tokens clamped by every limit, prompts counted and
truncated (each message counted once, the same answer as the old quadratic way), which
prompts are counted inline and which on the counting pool (its per-org gate:
tests/gateway/test_counting.py), and, through the consumer against the real mock LLM,
what a client sees of clamping and truncation."""
import pytest

from gateway.tokens import PromptTooLong, clamp_max_tokens, fit_prompt, model_max_output_tokens


def test_max_tokens_is_clamped_by_every_limit():
    base = dict(default=1024, deployment_max=4096)
    assert clamp_max_tokens(requested=500, **base) == 500
    assert clamp_max_tokens(requested=None, **base) == 1024
    assert clamp_max_tokens(requested=9000, **base) == 4096
    assert clamp_max_tokens(requested=9000, key_max=300, **base) == 300
    assert clamp_max_tokens(requested=9000, org_max=200, key_max=300, **base) == 200
    assert clamp_max_tokens(requested=9000, model_max=100, **base) == 100
    assert clamp_max_tokens(requested=9000, key_max=None, org_max=None, model_max=None, **base) == 4096


def test_the_models_own_output_maximum_comes_from_litellms_map():
    assert model_max_output_tokens("openai/gpt-4-turbo") == 4096
    assert model_max_output_tokens("gpt-4o") == 16384
    assert model_max_output_tokens("openai/no-such-model") is None


async def test_truncation_drops_the_oldest_turns_and_keeps_system_prompts_and_the_last_message():
    messages = [{"role": "system", "content": "be brief"}]
    for i in range(6):
        messages += [{"role": "user", "content": f"q{i} " + "word " * 50},
                     {"role": "assistant", "content": f"a{i} " + "word " * 50}]
    messages.append({"role": "user", "content": "last"})
    fitted = await fit_prompt("gpt-4o", messages, 10_000, 250)
    assert fitted.messages[0] == messages[0] and fitted.messages[-1] == messages[-1]
    assert fitted.prompt_tokens <= 250 and fitted.removed_messages >= 8
    kept = [m["content"].split()[0] for m in fitted.messages[1:-1]]
    assert kept == [m["content"].split()[0] for m in messages[-1 - len(kept):-1]]  # the newest, in order
    with pytest.raises(PromptTooLong) as too_long:
        await fit_prompt("gpt-4o", [{"role": "system", "content": "x " * 400}, {"role": "user", "content": "hi"}],
                         500, 100)
    assert too_long.value.needed > 100 and len(too_long.value.minimal) == 2


# --- truncation: each message counted once, the same answer as before ----------------------------
# These call the inner `tokens._fit` on purpose: they compare its answer and its counting
# with the old algorithm's (bench/truncation.py), which `fit_prompt` would only wrap.

import asyncio  # noqa: E402
from math import isqrt  # noqa: E402

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from bench.truncation import conversation, quadratic_fit_baseline  # noqa: E402
from gateway import tokens  # noqa: E402
from catalog.litellm_setup import litellm  # noqa: E402
from gateway.tokens import _count_messages, counting_cost  # noqa: E402


class CountedCalls:
    """litellm.token_counter, counting its calls and the messages passed to it; it fails
    the test as soon as more than `max_messages` messages have been counted (the old,
    quadratic truncation would count millions: fail fast instead of running for minutes)."""

    def __init__(self, monkeypatch, max_messages: int) -> None:
        self.calls = self.messages = 0
        self.max_messages = max_messages
        original = litellm.token_counter

        def counting_wrapper(*args, **kwargs):
            self.calls += 1
            self.messages += len(kwargs.get("messages") or ())
            assert self.messages <= self.max_messages, f"{self.messages:,} messages counted in {self.calls} calls"
            return original(*args, **kwargs)

        monkeypatch.setattr(litellm, "token_counter", counting_wrapper)


@pytest.mark.parametrize("n, room", [(300, 1000), (3000, 8192 - 1024)])
def test_truncation_counts_each_message_once(n, room, monkeypatch):
    # n tiny messages (3,000 are about 100 KB; into an 8k context): most turns must go.
    messages = conversation(n)
    prompt_tokens = _count_messages("openai/gpt-4", messages)
    assert prompt_tokens > room
    # Every message once, the block where the cut falls once more, then the kept
    # messages once (the recount whose total is reported): linear in n.
    calls = CountedCalls(monkeypatch, max_messages=2 * n + isqrt(n) + 5)
    fitted = tokens._fit("openai/gpt-4", messages, prompt_tokens, room)
    assert calls.messages <= n + len(fitted.messages) + isqrt(n) + 5
    assert calls.calls <= 2 * isqrt(n) + 5  # in about sqrt(n) blocks, not one call per message
    assert fitted.prompt_tokens <= room
    monkeypatch.undo()
    assert fitted.prompt_tokens == _count_messages("openai/gpt-4", fitted.messages)  # what litellm counts


def outcome(fit, model, messages, prompt_tokens, room):
    try:
        f = fit(model, messages, prompt_tokens, room)
    except tokens.PromptTooLong as exc:
        return ("too long", exc.needed, exc.room, exc.minimal)
    return ("fitted", f.messages, f.prompt_tokens, f.removed_tokens, f.removed_messages)


def same_as_before(model, messages, room, prompt_tokens=None):
    prompt_tokens = _count_messages(model, messages) if prompt_tokens is None else prompt_tokens
    now = outcome(tokens._fit, model, messages, prompt_tokens, room)
    assert now == outcome(quadratic_fit_baseline, model, messages, prompt_tokens, room)
    return now


MODELS = ["gpt-4o", "openai/gpt-4-turbo", "gpt-3.5-turbo-0301", "anthropic/claude-3-haiku-20240307"]


@pytest.mark.parametrize("model", MODELS)
def test_truncation_keeps_exactly_what_dropping_one_turn_at_a_time_kept(model):
    sys_ = lambda text: {"role": "system", "content": text}  # noqa: E731
    user = lambda text, **kw: {"role": "user", "content": text, **kw}  # noqa: E731
    bot = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    chat = [user(f"question {i} " + "word " * (i % 7 * 5)) if i % 2 == 0 else bot(f"answer {i} " + "yes " * (i % 5))
            for i in range(40)]
    total = _count_messages(model, chat + [user("last")])
    # System messages in the middle, kept wherever they are.
    middle = chat[:10] + [sys_("rule one")] + chat[10:25] + [sys_("rule two " * 20)] + chat[25:] + [user("last")]
    for room in (20, total // 7, total // 3, total // 2, total - 30, total + 40):
        same_as_before(model, middle, room)
    # Names (litellm adds a token per name, or takes one off for gpt-3.5-turbo-0301).
    named = [dict(m, name=f"n{i}") if i % 3 == 0 else m for i, m in enumerate(chat)] + [user("last", name="bob")]
    for room in (20, total // 5, total // 2, total - 10, total + 60):
        same_as_before(model, named, room)
    # A single huge last message: everything else goes, then it is too long alone.
    huge = [sys_("be brief")] + chat + [user("tell me about this: " + "lorem ipsum dolor " * 3000)]
    assert same_as_before(model, huge, 2000)[0] == "too long"
    kept = same_as_before(model, huge, _count_messages(model, [huge[0], huge[-1]]))
    assert kept[0] == "fitted" and [m["role"] for m in kept[1]] == ["system", "user"]
    # Nothing droppable: a system prompt and the question.
    only = [sys_("x " * 400), user("hi")]
    assert same_as_before(model, only, 100)[0] == "too long"
    # A stale prompt_tokens over the room although the prompt fits: at least one turn still goes.
    assert same_as_before(model, chat + [user("last")], total + 5, prompt_tokens=total + 100)[4] == 1
    assert same_as_before(model, only, 10_000, prompt_tokens=20_000)[0] == "too long"
    # Every droppable turn dropped and still too long; the minimal prompt fits at the edge.
    minimal = _count_messages(model, [sys_("rule two " * 20), user("last")])
    edge = [sys_("rule two " * 20)] + chat + [user("last")]
    for room in (minimal - 1, minimal, minimal + 1):
        same_as_before(model, edge, room)
    assert same_as_before(model, [user("only")], 1)[0] == "too long"


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
message = st.builds(
    lambda role, content, name: {"role": role, "content": content, **({"name": name} if name else {})},
    st.sampled_from(["system", "user", "assistant", "user", "assistant"]), texts,
    st.one_of(st.none(), st.from_regex(r"[a-z]{1,8}", fullmatch=True)))


@settings(max_examples=80, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(message, min_size=1, max_size=20), model=st.sampled_from(MODELS),
       room=st.integers(min_value=1, max_value=400), stale=st.integers(min_value=0, max_value=50))
def test_any_conversation_is_truncated_as_before(messages, model, room, stale):
    same_as_before(model, messages, room, prompt_tokens=max(_count_messages(model, messages), room + 1) + stale)


# --- where counting runs: inline when small, else on a pool of its own, bounded per org -------------

def test_a_hundred_kilobytes_of_tiny_messages_is_not_counted_on_the_event_loop():
    assert counting_cost(conversation(3000)) > tokens._COUNT_INLINE_MAX_COST  # 3,000 tiny messages, ~100 KB
    assert counting_cost([{"role": "user", "content": "x" * 15_000}]) <= tokens._COUNT_INLINE_MAX_COST


# --- through the consumer: what a client sees ------------------------------------------------------

from tests.support.consumer import ask, authed  # noqa: E402

consumer = pytest.mark.django_db(transaction=True)


@pytest.fixture
def deployment(make_deployment):
    return make_deployment("mock-fast")


@consumer
async def test_max_tokens_is_clamped_by_key_org_deployment_and_model(org, issued_key, make_deployment):
    # The model's own maximum: litellm's map gives gpt-4-turbo 4096 output tokens.
    await asyncio.to_thread(make_deployment, "mock-gpt4", litellm_model="openai/gpt-4-turbo",
                            max_output_tokens=100_000, context_window=200_000)
    await asyncio.to_thread(make_deployment, "mock-small", max_output_tokens=64)
    comm = await authed(issued_key)
    start = (await ask(comm, "model", model="mock-gpt4", parameters={"max_tokens": 50_000}))[0]
    assert start["max_tokens"] == 4096
    start = (await ask(comm, "deployment", model="mock-small", parameters={"max_tokens": 50_000}))[0]
    assert start["max_tokens"] == 64
    org.max_tokens_per_request = 48
    await org.asave()
    await comm.disconnect()
    comm = await authed(issued_key)  # limits are read when a socket authenticates
    start = (await ask(comm, "org", model="mock-small", parameters={"max_tokens": 50_000}))[0]
    assert start["max_tokens"] == 48
    api_key = issued_key.api_key
    api_key.max_tokens_per_request = 32
    await api_key.asave()
    await comm.disconnect()
    comm = await authed(issued_key)
    frames = await ask(comm, "key", model="mock-small", parameters={"max_tokens": 50_000})
    assert frames[0]["max_tokens"] == 32 and frames[-1]["type"] == "llm_response_end"  # served, not refused
    await comm.disconnect()


def long_conversation(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "You are terse. SYSTEM-MARK"}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i} " + "lorem ipsum dolor sit amet " * 20})
        messages.append({"role": "assistant", "content": f"answer {i} " + "consectetur adipiscing elit " * 20})
    messages.append({"role": "user", "content": "NEWEST-MARK what now? [[mock tokens=3 tag=truncation]]"})
    return messages


@consumer
async def test_a_long_conversation_is_truncated_keeping_the_system_prompt_and_newest_turns(
        org, issued_key, deployment, mockllm):
    org.max_input_tokens = 800
    await org.asave()
    comm = await authed(issued_key)
    messages = long_conversation(10)  # about 2,500 tokens
    frames = (await ask(comm, "long", messages=messages, prompt=None))
    start, end = frames[0], frames[-1]
    assert end["type"] == "llm_response_end", frames
    assert start["truncated"] is True and start["truncated_tokens"] > 1_000
    assert start["prompt_tokens"] <= 800
    sent = (await asyncio.to_thread(mockllm.requests, "truncation"))[-1]["messages"]
    assert sent[0]["content"].endswith("SYSTEM-MARK")
    assert sent[-1]["content"].startswith("NEWEST-MARK")
    assert "answer 9" in sent[-2]["content"]  # the newest turns survive
    assert all("question 0 " not in m["content"] for m in sent)  # the oldest went first
    await comm.disconnect()


@consumer
async def test_a_prompt_that_cannot_fit_even_truncated_gets_400_with_the_numbers(org, issued_key, deployment):
    org.max_input_tokens = 100
    await org.asave()
    comm = await authed(issued_key)
    messages = [{"role": "system", "content": "rules " * 300}, {"role": "user", "content": "hi"}]
    error = (await ask(comm, "nofit", messages=messages, prompt=None))[-1]
    assert (error["type"], error["code"]) == ("error", 400)
    assert "even truncated" in error["message"] and "input limit of 100 tokens" in error["message"]
    await comm.disconnect()
