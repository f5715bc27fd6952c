"""The `[[mock …]]` directives (mockllm/directives.py) on their own: collected from the
messages and the header, the last one winning, resolved against the server's defaults,
bad ones refused. What the server does with them: tests/mockllm/test_server.py."""
import pytest

from mockllm import directives


def test_directive_parsing_pure():
    raw = directives.collect(
        [{"role": "user", "content": "a [[mock tokens=3 hang]] b [[mock tokens=4]]"}],
        "tokens=1 tag=t1",
    )
    assert raw == {"tokens": "4", "tag": "t1", "fault": "hang"}
    d = directives.resolve(raw, rate=5, ttft_ms=10, default_tokens=24)
    assert d.tokens == 4 and d.fault == "hang" and d.tag == "t1" and d.rate == 5
    assert directives.resolve({}, rate=5, ttft_ms=10, default_tokens=9).tokens == 9
    assert directives.collect([{"role": "user", "content": "[[mockery]] [[mock]]"}]) == {}
    for bad in ("[[mock tokens=]]", "[[mock seed=x]]", "[[mock tag=a,b]]", "[[mock usage=maybe]]"):
        with pytest.raises(directives.DirectiveError):
            directives.from_request(
                [{"role": "user", "content": bad}], None, rate=1, ttft_ms=1, default_tokens=1
            )


def test_flags_are_shorthands_for_their_faults():
    for flag in ("hang", "cut", "stall", "no_finish", "repeat"):
        assert directives.collect([{"role": "user", "content": f"[[mock {flag}]]"}]) == {"fault": flag}
        assert flag in directives.FAULTS
    d = directives.from_request([{"role": "user", "content": "[[mock fault=no_finish]] [[mock repeat]]"}], None,
                                rate=1, ttft_ms=1, default_tokens=1)
    assert d.fault == "repeat"
