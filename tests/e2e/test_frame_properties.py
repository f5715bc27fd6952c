"""Property-based: frames full of arbitrary Unicode, over a real socket to a real gateway.

Every generated frame must get a valid protocol answer (well-formed UTF-8 JSON frames,
no 5xx), and every `llm_request` that passes parsing must leave exactly one usage
record whose text columns hold what the client sent. Whether a frame passes parsing
is decided by the protocol module itself (`parse_client_frame`), the one place that
validates text. Bounded (`max_examples`) and, under CI, derandomized (tests/conftest.py);
one shared stack and one socket for every example.
"""
from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from gateway.protocol import GatewayError, parse_client_frame

pytestmark = pytest.mark.e2e

# Characters that have broken gateways: NUL, lone surrogates (JSON can escape them),
# non-characters, the last code point, bidi and line separators, combining marks,
# control characters, JSON's own syntax, the mock's directive brackets.
HOSTILE = ["\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\ufffe", "\uffff", "\U0010ffff", "\u202e",
           "\u2028", "e\u0301", "\U0001f600", "\x1f", "\x7f", '"', "\\", "[[", "]]", "\n", " "]
_char = st.one_of(st.characters(), st.sampled_from(HOSTILE))
# Joined from a list: Hypothesis' own text() never yields lone surrogates.
_short = st.lists(_char, max_size=24).map("".join)


def _repeated(length: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    """Long text made by repeating a short one (drawing every character is slow)."""
    return st.tuples(_short.filter(bool), length).map(lambda pair: (pair[0] * pair[1])[:pair[1]])


text = st.one_of(_short, _short, _repeated(st.integers(190, 260)),  # around the 200-character limits
                 _repeated(st.integers(2_000, 8_000)))
DIRECTIVE = " [[mock ttft_ms=0 rate=2000 tokens=3]]"  # keep each served request quick

metadata = st.fixed_dictionaries({}, optional={
    "user_id": text, "priority": text, "tags": st.lists(text, max_size=3),
    "team": st.one_of(text, st.dictionaries(text, text, max_size=2)),
}).flatmap(lambda known: st.dictionaries(text, text, max_size=2).map(lambda extra: {**extra, **known}))

llm_request = st.fixed_dictionaries(
    {"type": st.just("llm_request"),
     "model": st.one_of(st.just("gpt-4-turbo"), st.just("gpt-4-turbo"), text),
     "prompt": text.map(lambda prompt: prompt + DIRECTIVE)},
    optional={
        "request_id": text,  # otherwise a fresh valid id is set
        "system": text,
        "metadata": metadata,
        "parameters": st.fixed_dictionaries({"max_tokens": st.just(3)},
                                            optional={"stop": st.lists(text.filter(bool), max_size=2)}),
        "future_field": st.one_of(text, st.lists(text, max_size=2)),
    },
)
other_frames = st.one_of(
    st.fixed_dictionaries({"type": st.just("cancel"), "request_id": text}),
    st.fixed_dictionaries({"type": st.just("ping")}, optional={"note": text}),
    st.fixed_dictionaries({"type": text}),
)


def _passes_parsing(raw: str) -> bool:
    try:
        parse_client_frame(raw)
        return True
    except GatewayError:
        return False


@pytest.fixture
def socket(stack):
    with connect(stack.url(), additional_headers={"Authorization": f"Bearer {stack.api_key}"},
                 max_size=None) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "auth_ok"
        yield ws


def _answers(ws, until) -> list[dict]:
    """Frames until `until(frame)`; each must be a JSON object (the socket already
    checked it is valid UTF-8)."""
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=15))
        assert isinstance(frame, dict) and isinstance(frame.get("type"), str), frame
        frames.append(frame)
        if until(frame):
            return frames


def test_requests_with_arbitrary_text_get_a_protocol_answer_and_exactly_one_faithful_record(stack, socket):
    log_before = len(stack.log())

    @settings(max_examples=60)
    @given(frame=llm_request)
    def check(frame):
        if "request_id" not in frame:
            frame["request_id"] = f"prop-{uuid.uuid4().hex}"
        raw = json.dumps(frame)  # lone surrogates travel as JSON escapes, as a client can send them
        assume(len(raw) < 200_000)  # a frame over the advertised limit is closed 4413 (tested elsewhere)
        passes = _passes_parsing(raw)
        socket.send(raw)
        rid = frame["request_id"]
        if not passes:
            (error,) = _answers(socket, lambda f: f["type"] == "error")
            assert error["code"] == 400 and error["error"] == "bad_request", error
            assert error.get("request_id") in (None, rid)
            return
        frames = _answers(socket, lambda f: f["type"] in ("llm_response_end", "error") and f.get("request_id") == rid)
        for answer in frames:
            assert answer.get("request_id") == rid, answer
            if answer["type"] == "error":
                assert answer["code"] < 500, answer  # no server error, no upstream failure caused by input
        rows = stack.wait_for_rows(
            "SELECT end_user, requested_model, status FROM billing_usagerecord WHERE client_request_id = %s",
            (rid,), timeout=15)
        assert len(rows) == 1, f"{len(rows)} usage records for {rid}"
        end_user, requested_model, status = rows[0]
        assert end_user == (frame.get("metadata") or {}).get("user_id", "")
        assert requested_model == frame["model"]
        served = frames[-1]["type"] == "llm_response_end"
        assert status in (("completed", "length") if served else ("rejected",)), (status, frames[-1])

    check()
    assert "Traceback" not in stack.log()[log_before:]


def test_other_frames_with_arbitrary_text_get_a_protocol_answer(stack, socket):
    log_before = len(stack.log())

    @settings(max_examples=40)
    @given(frame=other_frames)
    def check(frame):
        socket.send(json.dumps(frame))
        (answer,) = _answers(socket, lambda f: True)
        if frame["type"] == "ping" and _passes_parsing(json.dumps(frame)):
            assert answer == {"type": "pong"}
        else:
            assert answer["type"] == "error" and answer["code"] in (400, 404), answer

    check()
    socket.send(json.dumps({"type": "ping"}))
    assert json.loads(socket.recv(timeout=10)) == {"type": "pong"}  # still open and usable
    assert "Traceback" not in stack.log()[log_before:]
