"""How the gateway's server writes to the sockets it accepts (daphne on Twisted).

Two adaptations, both about the first token's way out (docs/architecture.md, "The
first token's way out"; measured by `python -m bench.first_token`):

1. ``TCP_NODELAY`` on every accepted connection (`accepted`). Twisted leaves
   Nagle's algorithm on, so a small frame written while an earlier one is still
   unacknowledged waits in the kernel for the client's ACK — which a client
   delays by up to 40 ms when it has nothing to send back. A WebSocket carrying
   one small frame per token is exactly that traffic. (asyncio, and so uvicorn,
   sets the option on every TCP socket; Twisted does not.)
2. Pushing a frame out now (`push`). Twisted's `transport.write` only buffers;
   the bytes reach the socket when the reactor next polls, after every callback
   already due on the event loop has run. A request's task reading an upstream
   whose chunks are already buffered does not give the loop back between chunks,
   so the first token's frame used to wait until the whole burst had been read
   and framed: 3.6 ms behind a 50-token burst on the lean path, 41 ms behind
   litellm's stream wrapper. A `websocket.send` carrying `infra.asgi_push.PUSH`
   is written to the socket straight away, with whatever is queued before it;
   frames without it are coalesced as before (one `send()` per reactor turn).
"""
from __future__ import annotations

import logging
import socket

from twisted.internet import abstract

from infra.asgi_push import PUSH

log = logging.getLogger(__name__)

__all__ = ["PUSH", "accepted", "push", "set_nodelay"]


def set_nodelay(sock: socket.socket) -> bool:
    """Turn Nagle's algorithm off on a TCP socket; False if it is not one (or refuses)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False  # the peer may already be gone; nothing to tune then
    return True


def accepted(transport) -> None:
    """Tune a connection the server just accepted (called from the HTTP channel's
    `connectionMade`, before anything is read from or written to it)."""
    get_handle = getattr(transport, "getHandle", None)
    handle = get_handle() if get_handle is not None else None
    if isinstance(handle, socket.socket):
        set_nodelay(handle)


def push(transport) -> None:
    """Write what Twisted holds for this connection to its socket now.

    It is the reactor's own call (`doWrite`), made early, and only for a plain,
    open Twisted TCP transport; anything else (a TLS wrapper, a connection being
    closed, whose last write the reactor must see) is left to the reactor, which
    writes it at its next turn as before. What one `send()` does not take stays
    buffered for the reactor. A failed write is left to the reactor too: the data
    stays buffered and the socket registered for writing, so the reactor meets
    the same error and closes the connection the way it always does.
    """
    if not isinstance(transport, abstract.FileDescriptor) or not hasattr(transport, "socket"):
        return
    if not transport.connected or transport.disconnecting or transport._writeDisconnecting:
        return
    if not transport._tempDataBuffer and transport.offset >= len(transport.dataBuffer):
        return  # nothing waiting
    transport.doWrite()
