from gateway.tokens import clamp_max_tokens


def test_max_tokens_is_clamped_by_every_limit():
    base = dict(default=1024, deployment_max=4096, key_max=None, context_window=8192, prompt_tokens=100)
    assert clamp_max_tokens(requested=500, **base) == 500
    assert clamp_max_tokens(requested=None, **base) == 1024
    assert clamp_max_tokens(requested=9000, **base) == 4096
    assert clamp_max_tokens(requested=9000, **{**base, "key_max": 300}) == 300
    assert clamp_max_tokens(requested=9000, **{**base, "context_window": 600}) == 500
