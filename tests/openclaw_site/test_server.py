"""The HTTP channel's request deadline (openclaw_site/server.py), on a fake clock and
transport (the real server: tests/e2e/test_slow_clients.py)."""
from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import http

from openclaw_site.server import HeadDeadlineChannel

DEADLINE = 10


class OkRequest(http.Request):
    def process(self):
        self.setHeader(b"content-length", b"2")
        self.write(b"ok")
        self.finish()


@pytest.fixture
def connection():
    clock = Clock()
    channel = HeadDeadlineChannel()
    channel.requestFactory = OkRequest
    channel.callLater = clock.callLater
    channel.head_timeout = DEADLINE
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, clock


def trickle(channel, clock, data: bytes, seconds_per_byte: float = 1) -> None:
    for byte in data:
        channel.dataReceived(bytes([byte]))
        clock.advance(seconds_per_byte)


def test_a_trickled_head_gets_408_and_is_closed_at_the_deadline(connection):
    channel, transport, clock = connection
    trickle(channel, clock, b"GET / HTTP/1.1\r\nHost: x\r\n"[:DEADLINE - 1])
    assert transport.value() == b"" and not transport.disconnecting  # 9 s: still within the deadline
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n") and transport.disconnecting
    channel.dataReceived(b"more")  # ignored once timed out
    assert transport.value().count(b"HTTP/1.1") == 1


def test_a_silent_connection_gets_408_at_the_deadline(connection):
    channel, transport, clock = connection
    clock.advance(DEADLINE)
    assert transport.value().startswith(b"HTTP/1.1 408 ") and transport.disconnecting


def test_a_complete_request_in_time_is_served_and_the_deadline_no_longer_applies(connection):
    channel, transport, clock = connection
    trickle(channel, clock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", seconds_per_byte=DEADLINE / 40)
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    clock.advance(DEADLINE * 3)  # an idle kept-alive connection is left to Twisted's idle timeout
    assert b"408" not in transport.value() and not transport.disconnecting


def test_the_next_request_on_a_kept_alive_connection_has_its_own_deadline(connection):
    channel, transport, clock = connection
    channel.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    clock.advance(DEADLINE * 3)
    trickle(channel, clock, b"GET /second HTTP/1.1\r\n"[:DEADLINE])
    assert transport.value().startswith(b"HTTP/1.1 200 ") and b"HTTP/1.1 408 " in transport.value()
    assert transport.disconnecting


def test_a_trickled_body_counts_toward_the_deadline(connection):
    channel, transport, clock = connection
    channel.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    trickle(channel, clock, b"x" * DEADLINE)
    assert transport.value().startswith(b"HTTP/1.1 408 ")


def test_closing_the_connection_cancels_the_deadline(connection):
    channel, transport, clock = connection
    channel.dataReceived(b"GET / HT")
    channel.connectionLost(None)
    assert clock.getDelayedCalls() == []


def test_the_server_raises_its_open_files_limit_to_the_hard_limit_and_says_so(monkeypatch, caplog):
    import logging
    import resource

    from openclaw_site import server

    limits = {"now": (1024, 65536)}
    monkeypatch.setattr(resource, "getrlimit", lambda which: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: limits.update(now=value))
    with caplog.at_level(logging.INFO, logger="openclaw_site.server"):
        assert server.raise_open_files_limit() == (65536, 65536)
    assert limits["now"] == (65536, 65536)
    assert "open files limit raised from 1024 to 65536" in caplog.text and "WARNING" not in caplog.text


def test_a_low_hard_open_files_limit_is_a_warning_naming_the_fix(monkeypatch, caplog):
    import logging
    import resource

    from openclaw_site import server

    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1024))
    monkeypatch.setattr(resource, "setrlimit", lambda which, value: pytest.fail("nothing to raise"))
    with caplog.at_level(logging.INFO, logger="openclaw_site.server"):
        assert server.raise_open_files_limit() == (1024, 1024)
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
    assert "1024" in warning.getMessage() and "ulimit -Hn" in warning.getMessage()


def test_a_tcp_listener_queues_1024_pending_connections_unless_told_otherwise():
    from twisted.internet import reactor

    from openclaw_site.server import LISTEN_BACKLOG, server_endpoint

    assert server_endpoint(reactor, "tcp:port=8000:interface=127.0.0.1")._backlog == LISTEN_BACKLOG == 1024
    assert server_endpoint(reactor, "tcp:port=8000:interface=127.0.0.1:backlog=10")._backlog == 10
