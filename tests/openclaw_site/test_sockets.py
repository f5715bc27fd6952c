"""How the server writes to the sockets it accepts (openclaw_site/sockets.py), on real
loopback sockets; its effect on the first token: `python -m bench.first_token`."""
from __future__ import annotations

import socket
from contextlib import closing

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport

from infra.asgi_push import PUSH
from openclaw_site import sockets
from openclaw_site.server import GracefulWebSocketProtocol, HeadDeadlineChannel


@pytest.fixture
def pair():
    """A connected TCP pair on loopback: (the server's accepted socket, the client's)."""
    with closing(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    with closing(server), closing(client):
        yield server, client


def nodelay(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class FakeReactor:
    """What a Twisted TCP transport asks of its reactor when it writes."""

    def __init__(self):
        self.writers = set()

    def addWriter(self, selectable):  # noqa: N802 (Twisted's names)
        self.writers.add(selectable)

    def removeWriter(self, selectable):  # noqa: N802
        self.writers.discard(selectable)

    def addReader(self, selectable):  # noqa: N802
        pass

    def removeReader(self, selectable):  # noqa: N802
        pass


def twisted_transport(sock: socket.socket) -> tuple[tcp.Server, FakeReactor]:
    reactor = FakeReactor()
    sock.setblocking(False)
    transport = tcp.Server(sock, Protocol(), ("127.0.0.1", 1), None, 1, reactor)
    return transport, reactor


def received(sock: socket.socket) -> bytes:
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


def test_an_accepted_connection_gets_tcp_nodelay(pair):
    server, _client = pair
    assert not nodelay(server)  # the kernel's default, which Twisted keeps
    sockets.accepted(twisted_transport(server)[0])
    assert nodelay(server)


def test_the_http_channel_tunes_its_connection_as_it_is_made(pair):
    server, _client = pair
    transport, _reactor = twisted_transport(server)
    HeadDeadlineChannel().makeConnection(transport)
    assert nodelay(server)
    HeadDeadlineChannel().makeConnection(StringTransport())  # no socket (tests, wrappers): left alone


def test_set_nodelay_leaves_what_is_not_a_tcp_socket_alone():
    left, right = socket.socketpair()
    with closing(left), closing(right):
        assert sockets.set_nodelay(left) is False


def test_push_writes_what_twisted_buffered_to_the_socket_now(pair):
    server, client = pair
    transport, reactor = twisted_transport(server)
    transport.write(b"first token")
    assert received(client) == b"" and transport in reactor.writers  # buffered until the reactor's turn
    sockets.push(transport)
    assert received(client) == b"first token"
    assert transport not in reactor.writers  # nothing left for the reactor to write
    sockets.push(transport)  # nothing waiting: nothing happens
    assert received(client) == b""


def test_push_leaves_a_closing_connection_to_the_reactor(pair):
    server, client = pair
    transport, reactor = twisted_transport(server)
    transport.write(b"last words")
    transport.disconnecting = True  # loseConnection: the reactor must see its last write itself
    sockets.push(transport)
    assert received(client) == b"" and transport in reactor.writers


def test_push_ignores_transports_that_are_not_twisted_tcp_connections():
    transport = StringTransport()
    transport.write(b"x")
    sockets.push(transport)
    assert transport.value() == b"x"


def test_a_send_carrying_push_is_pushed_and_others_are_not(monkeypatch):
    import daphne.ws_protocol

    written, pushed = [], []
    monkeypatch.setattr(daphne.ws_protocol.WebSocketProtocol, "handle_reply",
                        lambda self, message: written.append(message["text"]))
    monkeypatch.setattr(sockets, "push", lambda transport: pushed.append(transport))
    protocol = GracefulWebSocketProtocol()
    protocol.transport = transport = StringTransport()
    protocol.handle_reply({"type": "websocket.send", "text": "start"})
    protocol.handle_reply({"type": "websocket.send", "text": "token", PUSH: True})
    assert written == ["start", "token"] and pushed == [transport]
