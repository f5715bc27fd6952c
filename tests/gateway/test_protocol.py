"""The wire protocol (gateway/protocol.py): parsing client frames, error frames, and
docs/protocol.md listing every error and close code with the tests that produce them."""
import ast
import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.protocol import (
    ERROR_NAMES,
    AuthFrame,
    CancelFrame,
    CloseCode,
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


# --- Text the gateway accepts (one place: protocol.unstorable_text) ---------------------

BAD_TEXT = [("\x00", "NUL (U+0000)"), ("\ud800", "lone surrogate"), ("ok\udfffok", "lone surrogate")]

# Every string-bearing place of every frame type, as (frame, path named in the error).
PLACES = [
    (lambda bad: {"type": "auth", "token": bad}, "token"),
    (lambda bad: {"type": "cancel", "request_id": bad}, "request_id"),
    (lambda bad: {"type": bad}, "type"),
    (lambda bad: {"type": "ping", "future": bad}, "future"),
    (lambda bad: {"type": "llm_request", "model": bad, "prompt": "hi"}, "model"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": bad}, "prompt"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "system": bad}, "system"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "session_id": bad}, "session_id"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "request_id": bad}, "request_id"),
    (lambda bad: {"type": "llm_request", "model": "m", "messages": [{"role": "user", "content": "a"},
                                                                 {"role": "user", "content": bad}]},
     "messages.1.content"),
    (lambda bad: {"type": "llm_request", "model": "m", "messages": [{"role": "user", "content": "a", "name": bad}]},
     "messages.0.name"),
    (lambda bad: {"type": "llm_request", "model": "m", "messages": [{"role": bad, "content": "a"}]},
     "messages.0.role"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "parameters": {"stop": ["x", bad]}},
     "parameters.stop.1"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "metadata": {"user_id": bad}},
     "metadata.user_id"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "metadata": {"priority": bad}},
     "metadata.priority"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "metadata": {"tags": ["a", bad]}},
     "metadata.tags.1"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "metadata": {"team": {"deep": [bad]}}},
     "metadata.team.deep.0"),
    (lambda bad: {"type": "llm_request", "model": "m", "prompt": "hi", "unknown": bad}, "unknown"),
]


@pytest.mark.parametrize("bad,named", BAD_TEXT)
@pytest.mark.parametrize("make,path", PLACES)
def test_nul_and_lone_surrogates_are_refused_wherever_they_appear(make, path, bad, named):
    with pytest.raises(GatewayError) as caught:
        parse(make(bad))
    assert caught.value.code == ErrorCode.BAD_REQUEST
    assert caught.value.message.startswith(f"{path}: must not contain") and named in caught.value.message
    # The error frame itself is always sendable: valid UTF-8, the bad text never echoed.
    text = json.dumps(caught.value.frame(), ensure_ascii=False)
    text.encode("utf-8")
    assert bad not in text and caught.value.request_id is None


@pytest.mark.parametrize("bad", ["\x00", "\ud800"])
def test_a_bad_object_key_is_refused_and_shown_escaped(bad):
    with pytest.raises(GatewayError) as caught:
        parse({"type": "llm_request", "model": "m", "prompt": "hi", "metadata": {f"k{bad}": 1}})
    message = caught.value.message
    assert message.startswith("metadata: a key (") and ascii(f"k{bad}") in message
    message.encode("utf-8")


def test_any_other_unicode_is_accepted_as_it_is():
    text = "\ufffe\uffff\U0010ffff\u202e\u2028 \U0001f600 e\u0301 \x01\x1f"
    frame = parse({"type": "llm_request", "request_id": "r1", "model": text, "prompt": text,
                   "metadata": {"user_id": text, "tags": [text[:64]], text: text}})
    assert frame.model == text and frame.prompt == text and frame.metadata.user_id == text
    # A surrogate *pair* escaped in JSON is one well-formed character.
    frame = parse_client_frame('{"type":"llm_request","model":"m","prompt":"\\ud83d\\ude00"}')
    assert frame.prompt == "\U0001f600"


def test_a_valid_request_id_is_echoed_with_a_refusal_and_an_invalid_one_never():
    with pytest.raises(GatewayError) as caught:
        parse({"type": "llm_request", "request_id": "r-7", "model": "m", "prompt": "a\x00"})
    assert caught.value.request_id == "r-7"
    with pytest.raises(GatewayError) as caught:
        parse({"type": "llm_request", "request_id": "r 7 with spaces", "model": "m"})
    assert caught.value.request_id is None


def test_a_long_path_is_shortened_in_the_message():
    key = "k" * 500
    with pytest.raises(GatewayError) as caught:
        parse({"type": "ping", key: "\x00"})
    assert len(caught.value.message) < 250


def test_frames_with_a_lone_surrogate_from_upstream_still_encode_as_valid_utf8():
    from gateway.protocol import encode, token_frame

    frame = token_frame(request_id="r1", seq=0, content="a\ud800b")
    text = encode(frame)
    text.encode("utf-8")
    assert json.loads(text) == frame
    assert encode({"type": "x", "content": "é"}) == '{"type":"x","content":"é"}'  # the common case stays compact


@given(request_id=st.text(max_size=40), seq=st.integers(min_value=0, max_value=2**63), content=st.text(max_size=60))
@settings(max_examples=300)
def test_a_token_frame_encodes_exactly_as_json_dumps_would(request_id, seq, content):
    """llm_token frames are spelled out by hand (one per token); the text is the one the
    generic encoding gives, byte for byte, for any text (lone surrogates included)."""
    from gateway.protocol import encode, token_frame

    frame = token_frame(request_id=request_id, seq=seq, content=content)
    expected = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    try:
        expected.encode("utf-8")
    except UnicodeEncodeError:
        expected = json.dumps(frame, separators=(",", ":"))
    assert encode(frame) == expected
    assert json.loads(encode(frame)) == frame


def test_a_frame_that_only_looks_like_a_token_frame_is_encoded_generically():
    from gateway.protocol import encode

    odd = {"type": "llm_token", "request_id": "r", "seq": True, "content": "x"}  # a bool is not a seq
    assert encode(odd) == '{"type":"llm_token","request_id":"r","seq":true,"content":"x"}'
    extra = {"type": "llm_token", "request_id": "r", "seq": 1, "content": "x", "more": 1}
    assert json.loads(encode(extra)) == extra


def test_text_from_a_provider_is_made_storable():
    from gateway.protocol import storable

    assert storable("chatcmpl-1") == "chatcmpl-1"
    assert storable("a\x00b\ud800c") == "ab?c"


# --- docs/protocol.md lists every code with the tests that produce it ---------------------

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text()


def table(heading: str) -> dict[int, str]:
    section = DOC.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\|\s*(\d{3,4})\s*\|", line)
        if match:
            rows[int(match.group(1))] = line.rsplit("|", 2)[-2]
    return rows


def defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def referenced_tests(cell: str) -> list[tuple[str, str]]:
    refs, current_file = [], None
    for file, name in re.findall(r"`(?:(tests/[\w/]+\.py))?::(\w+)`", cell):
        current_file = file or current_file
        refs.append((current_file, name))
    return refs


def test_every_code_is_documented_with_a_test_or_reserved():
    errors, closes = table("Error codes"), table("Close codes")
    reserved = DOC.split("Codes reserved for later versions", 1)[1].split("\n\n", 1)[0]
    for code in ErrorCode:
        assert code.value in errors or f"error {code.value}" in reserved, f"error {code.value} undocumented"
    for code in CloseCode:
        assert code.value in closes or f"{code.value}" in reserved, f"close {code.value} undocumented"


def test_every_documented_code_names_tests_that_exist():
    for heading in ("Error codes", "Close codes"):
        for code, cell in table(heading).items():
            refs = referenced_tests(cell)
            assert refs, f"{heading} {code} names no test"
            for file, name in refs:
                assert name in defined_functions(ROOT / file), f"{heading} {code}: {file}::{name} does not exist"
