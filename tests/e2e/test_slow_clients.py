"""Slowloris: a client must send its whole HTTP request within the request-head deadline.

Against a real gateway process (started with `manage.py serve`) whose deadline is 2 s:
a socket trickling its request one byte at a time is answered 408 and closed; a normal
WebSocket and a slow handshake that completes in time keep working; a few hundred
trickling sockets neither stop a normal client nor outlive the deadline.
"""
from __future__ import annotations

import asyncio
import json
import os
import selectors
import socket
import time
import urllib.request

import pytest

from tests.support.frames import authed_socket, next_frame, send_frame

pytestmark = pytest.mark.e2e

DEADLINE = 2
MARGIN = 3  # scheduling slack on a busy machine; Twisted's own idle timeout is 60 s

UPGRADE_HEAD = (b"GET /websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.fixture(scope="module")
def gateway_port(stack):
    return stack.start_gateway(OPENCLAW_REQUEST_HEAD_TIMEOUT_SECONDS=str(DEADLINE))


def trickle(port: int, prefix: bytes, trickled: bytes, *, interval: float = 0.25, give_up: float = 12):
    """Send `prefix`, then `trickled` one byte per `interval`; return (seconds until the server closed, reply)."""
    sock = socket.create_connection(("127.0.0.1", port))
    started = time.monotonic()
    reply = b""
    try:
        if prefix:
            sock.sendall(prefix)
        for byte in trickled:
            if time.monotonic() - started > give_up:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # the server has gone
                return time.monotonic() - started, reply
            sock.settimeout(interval)
            try:
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return time.monotonic() - started, reply
                    reply += chunk
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - started, reply
        return None, reply  # still open
    finally:
        sock.close()


@pytest.mark.parametrize("prefix, trickled", [
    pytest.param(b"", UPGRADE_HEAD * 4, id="upgrade-head"),
    pytest.param(b"POST /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000\r\n\r\n",
                 b"x" * 4000, id="form-body"),
])
def test_a_request_trickled_byte_by_byte_is_answered_408_and_closed_at_the_deadline(gateway_port, prefix, trickled):
    closed_after, reply = trickle(gateway_port, prefix, trickled)
    assert closed_after is not None, "the trickling socket was still open after 12 s"
    assert DEADLINE - 0.5 <= closed_after <= DEADLINE + MARGIN
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]


def test_a_slow_handshake_that_completes_in_time_stays_open_past_the_deadline(gateway_port):
    sock = socket.create_connection(("127.0.0.1", gateway_port), timeout=10)
    try:
        for start in range(0, len(UPGRADE_HEAD), len(UPGRADE_HEAD) // 4 + 1):  # four pieces over ~1.2 s
            sock.sendall(UPGRADE_HEAD[start:start + len(UPGRADE_HEAD) // 4 + 1])
            time.sleep(0.3)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = sock.recv(4096)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 101 "), reply
        time.sleep(DEADLINE + 1)  # past the deadline, counted from the connection
        # A masked, empty WebSocket ping; the server must still answer it (pong, opcode 0xA).
        sock.sendall(b"\x89\x80" + os.urandom(4))
        assert sock.recv(2)[:1] == b"\x8a"
    finally:
        sock.close()


def test_a_normal_websocket_works_past_the_deadline(stack, gateway_port):
    async def scenario():
        ws = await authed_socket(stack.url(gateway_port), stack.api_key)
        try:
            await asyncio.sleep(DEADLINE + 1)
            await send_frame(ws, {"type": "ping"})
            return await next_frame(ws)
        finally:
            await ws.close()

    assert asyncio.run(scenario())["type"] == "pong"


def test_hundreds_of_trickling_sockets_neither_stop_a_normal_client_nor_outlive_the_deadline(stack, gateway_port):
    selector = selectors.DefaultSelector()
    trickling = []
    for _ in range(300):
        sock = socket.create_connection(("127.0.0.1", gateway_port))
        sock.setblocking(False)
        sock.send(b"G")
        trickling.append(sock)
        selector.register(sock, selectors.EVENT_READ)
    opened = time.monotonic()
    try:
        # Served while all 300 are held open: HTTP and an authenticated WebSocket.
        with urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/healthz", timeout=10) as response:
            assert json.loads(response.read()) == {"status": "ok"}
        pong = asyncio.run(_ping_once(stack.url(gateway_port), stack.api_key))
        assert pong["type"] == "pong"

        # Keep trickling (one byte per socket every 0.5 s) until the server has closed them all.
        head, position, closed = UPGRADE_HEAD[1:], 0, set()
        while len(closed) < len(trickling) and time.monotonic() - opened < DEADLINE + MARGIN + 5:
            for key, _ in selector.select(timeout=0.5):
                try:
                    if key.fileobj.recv(4096) == b"":
                        closed.add(key.fileobj)
                        selector.unregister(key.fileobj)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    closed.add(key.fileobj)
                    selector.unregister(key.fileobj)
            for sock in trickling:
                if sock not in closed:
                    try:
                        sock.send(head[position % len(head):position % len(head) + 1])
                    except OSError:
                        pass
            position += 1
        elapsed = time.monotonic() - opened
        assert len(closed) == len(trickling), f"{len(trickling) - len(closed)} trickling sockets still open"
        assert elapsed <= DEADLINE + MARGIN + 2  # opening 300 sockets takes a moment too
    finally:
        selector.close()
        for sock in trickling:
            sock.close()


async def _ping_once(url: str, key: str) -> dict:
    ws = await authed_socket(url, key)
    try:
        await send_frame(ws, {"type": "ping"})
        return await next_frame(ws)
    finally:
        await ws.close()
