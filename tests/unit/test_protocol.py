import json

import pytest

from gateway.protocol import (
    ERROR_NAMES,
    AuthFrame,
    CancelFrame,
    ErrorCode,
    GatewayError,
    LlmRequestFrame,
    PingFrame,
    error_frame,
    parse_client_frame,
)


def parse(obj):
    return parse_client_frame(json.dumps(obj))


def test_it_parses_the_article_clients_request():
    frame = parse({
        "type": "llm_request", "model": "gpt-4-turbo", "prompt": "Explain entanglement",
        "parameters": {"max_tokens": 500, "temperature": 0.7, "stream": True},
        "metadata": {"user_id": "user123", "priority": "normal"},
    })
    assert isinstance(frame, LlmRequestFrame)
    assert frame.parameters.max_tokens == 500 and frame.metadata.user_id == "user123"
    assert frame.chat_messages() == [{"role": "user", "content": "Explain entanglement"}]


def test_it_puts_the_system_prompt_first():
    frame = parse({"type": "llm_request", "model": "m", "system": "Be brief.",
                   "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    assert [m["role"] for m in frame.chat_messages()] == ["system", "user", "assistant"]


def test_it_ignores_unknown_optional_fields():
    frame = parse({"type": "ping", "future_field": 1})
    assert isinstance(frame, PingFrame)
    assert isinstance(parse({"type": "auth", "token": "x", "extra": True}), AuthFrame)
    assert isinstance(parse({"type": "cancel", "request_id": "r1"}), CancelFrame)


@pytest.mark.parametrize("text,fragment", [
    ("not json", "not valid JSON"),
    ("[1,2]", "JSON object"),
    ('{"no_type": 1}', "string 'type'"),
    ('{"type": "dance"}', "unknown frame type"),
    ('{"type": "llm_request", "model": "m"}', "either 'prompt' or 'messages'"),
    ('{"type": "llm_request", "model": "m", "prompt": "a", "messages": [{"role":"user","content":"b"}]}', "not both"),
    ('{"type": "llm_request", "model": "m", "prompt": "   "}', "must not be empty"),
    ('{"type": "llm_request", "model": "", "prompt": "a"}', "model"),
    ('{"type": "llm_request", "model": "m", "prompt": "a", "parameters": {"max_tokens": "500"}}', "parameters.max_tokens"),
    ('{"type": "llm_request", "model": "m", "prompt": "a", "parameters": {"max_tokens": 0}}', "parameters.max_tokens"),
    ('{"type": "llm_request", "model": "m", "prompt": "a", "parameters": {"temperature": 9}}', "parameters.temperature"),
    ('{"type": "llm_request", "model": "m", "prompt": 5}', "prompt"),
    ('{"type": "llm_request", "model": "m", "messages": [{"role": "wizard", "content": "x"}]}', "messages.0.role"),
    ('{"type": "llm_request", "model": "m", "prompt": "a", "request_id": "bad id!"}', "request_id"),
    ('{"type": "cancel"}', "request_id"),
])
def test_it_rejects_bad_frames_with_a_400_naming_the_problem(text, fragment):
    with pytest.raises(GatewayError) as caught:
        parse_client_frame(text)
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert fragment in caught.value.message


def test_a_bad_request_keeps_its_request_id_for_the_client():
    with pytest.raises(GatewayError) as caught:
        parse({"type": "llm_request", "request_id": "r-7", "model": "m"})
    assert caught.value.frame()["request_id"] == "r-7"


def test_error_frames_have_the_documented_shape():
    frame = error_frame(ErrorCode.RATE_LIMITED, "slow down", request_id="r", retryable=True, retry_after_ms=1200)
    assert frame == {"type": "error", "request_id": "r", "code": 429, "error": "rate_limited",
                     "message": "slow down", "retryable": True, "retry_after_ms": 1200}
    assert set(ERROR_NAMES) == set(ErrorCode)
