"""`require(service)` (tests/support/services.py): under CI a configured service that does not answer fails the test, never skips it."""
import socket

import pytest

from tests.support.services import require


def outcome_of(service: str) -> BaseException | None:
    """What `require` raised. A skip must be caught too: left to propagate, a wrong
    skip would mark the test skipped instead of failing it."""
    try:
        require(service)
    except BaseException as raised:  # Skipped and Failed are BaseExceptions
        return raised
    return None


@pytest.fixture
def closed_port():
    """A loopback port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def listening_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_configured_service_that_is_down_fails_under_ci(monkeypatch, closed_port):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port}/0")
    monkeypatch.setenv("CI", "1")
    outcome = outcome_of("redis")
    assert isinstance(outcome, pytest.fail.Exception), repr(outcome)
    assert f"redis at 127.0.0.1:{closed_port} does not answer" in str(outcome)


def test_a_configured_service_that_is_down_skips_outside_ci(monkeypatch, closed_port):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{closed_port}/0")
    monkeypatch.delenv("CI", raising=False)
    outcome = outcome_of("redis")
    assert isinstance(outcome, pytest.skip.Exception), repr(outcome)
    assert "does not answer" in str(outcome)


def test_a_service_this_pass_does_not_configure_is_skipped_even_under_ci(monkeypatch):
    # The embedded pass runs with CI set too: its Redis tests belong to the services pass.
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("CI", "1")
    outcome = outcome_of("redis")
    assert isinstance(outcome, pytest.skip.Exception), repr(outcome)
    assert "not configured" in str(outcome)


def test_a_configured_service_that_answers_lets_the_test_run(monkeypatch, listening_port):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{listening_port}/0")
    monkeypatch.setenv("CI", "1")
    assert outcome_of("redis") is None  # neither skipped nor failed
