"""A local webhook receiver (answering as told: ok, redirect, error, slow, drip) and the
setting that lets webhooks reach it (loopback is refused otherwise)."""
import http.server
import threading
import time
from contextlib import contextmanager

import pytest


class Receiver(http.server.BaseHTTPRequestHandler):
    behaviour = "ok"
    received: list

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        mode = self.server.behaviour
        if mode == "slow":
            time.sleep(2)
        if mode == "drip":  # a byte at a time: every read is quick, the whole is not
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
            return
        status = {"ok": 204, "redirect": 302, "error": 500, "slow": 200}[mode]
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def receiver(behaviour="ok"):
    """A receiver on a free loopback port; `.received` lists (headers, body) of each POST."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    server.behaviour = behaviour
    server.received = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def allow_loopback(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
