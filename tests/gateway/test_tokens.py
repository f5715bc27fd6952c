import pytest

from gateway.tokens import PromptTooLong, _fit, clamp_max_tokens, model_max_output_tokens


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


def test_truncation_drops_the_oldest_turns_and_keeps_system_prompts_and_the_last_message():
    messages = [{"role": "system", "content": "be brief"}]
    for i in range(6):
        messages += [{"role": "user", "content": f"q{i} " + "word " * 50},
                     {"role": "assistant", "content": f"a{i} " + "word " * 50}]
    messages.append({"role": "user", "content": "last"})
    fitted = _fit("gpt-4o", messages, 10_000, 250)
    assert fitted.messages[0] == messages[0] and fitted.messages[-1] == messages[-1]
    assert fitted.prompt_tokens <= 250 and fitted.removed_messages >= 8
    kept = [m["content"].split()[0] for m in fitted.messages[1:-1]]
    assert kept == [m["content"].split()[0] for m in messages[-1 - len(kept):-1]]  # the newest, in order
    with pytest.raises(PromptTooLong) as too_long:
        _fit("gpt-4o", [{"role": "system", "content": "x " * 400}, {"role": "user", "content": "hi"}], 500, 100)
    assert too_long.value.needed > 100 and len(too_long.value.minimal) == 2
