"""Command lines of the processes that make up a running gateway.

One place, used by `manage.py run_gateway` (the embedded default), by the
end-to-end tests and by the benchmark, so all of them run the same thing.
"""
from __future__ import annotations

import errno
import socket
import sys

from django.conf import settings


def gateway_command(*, host: str, port: int, reuse_port: bool = False) -> list[str]:
    """One gateway server process. `reuse_port`: it shares the port with others (SO_REUSEPORT)."""
    limit = settings.GATEWAY["MAX_MESSAGE_BYTES"]
    return [
        sys.executable, "-m", "openclaw_site.server",
        *(["--reuse-port"] if reuse_port else []),
        "-b", host, "-p", str(port),
        # The ASGI server's own hard limit sits above the gateway's advertised
        # one, so the gateway answers an oversized frame (413, close 4413) first.
        "--websocket-max-message-size", str(limit * 4),
        "--websocket-max-frame-size", str(limit * 4),
        # No cap on connection age: silence never closes an authenticated socket.
        "--websocket_timeout", "-1",
        "--ping-interval", str(settings.GATEWAY["HEARTBEAT_SECONDS"]),
        "--ping-timeout", str(settings.GATEWAY["HEARTBEAT_SECONDS"] * 2),
        "--application-close-timeout", "15",
        # A whole request head within this long, or 408 and close (slowloris).
        "--request-head-timeout", str(settings.GATEWAY["REQUEST_HEAD_TIMEOUT_SECONDS"]),
        "--access-log", "/dev/null",
        "openclaw_site.asgi:application",
    ]


def serve_command(*, host: str, port: int, processes: int = 1) -> list[str]:
    """What `manage.py serve` runs: the server itself for one process; for several, a
    supervisor (openclaw_site/supervisor.py) running that many servers on one port."""
    if processes == 1:
        return gateway_command(host=host, port=port)
    return [sys.executable, "-m", "openclaw_site.supervisor", "--processes", str(processes), "--",
            *gateway_command(host=host, port=port, reuse_port=True)]


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port already (a plain bind, as the server's own, fails)."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except OSError:
        return False  # an address that cannot be resolved: the server says so itself
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def mockllm_command(*, host: str, port: int, rate: float = 50, ttft_ms: int = 100) -> list[str]:
    return [sys.executable, "-m", "mockllm", "--host", host, "--port", str(port),
            "--rate", str(rate), "--ttft-ms", str(ttft_ms)]


def worker_command(*, beat: bool = True) -> list[str]:
    command = [sys.executable, "-m", "celery", "-A", "openclaw_site", "worker", "--loglevel", "WARNING",
               "--concurrency", "1", "--without-gossip", "--without-mingle"]
    if beat:
        command.append("--beat")
    return command
