"""Command lines of the processes that make up a running gateway.

One place, used by `manage.py run_gateway` (the embedded default), by the
end-to-end tests and by the benchmark, so all of them run the same thing.
"""
from __future__ import annotations

import sys

from django.conf import settings


def gateway_command(*, host: str, port: int) -> list[str]:
    limit = settings.GATEWAY["MAX_MESSAGE_BYTES"]
    return [
        sys.executable, "-m", "openclaw_site.server",
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


def mockllm_command(*, host: str, port: int, rate: float = 50, ttft_ms: int = 100) -> list[str]:
    return [sys.executable, "-m", "mockllm", "--host", host, "--port", str(port),
            "--rate", str(rate), "--ttft-ms", str(ttft_ms)]


def worker_command(*, beat: bool = True) -> list[str]:
    command = [sys.executable, "-m", "celery", "-A", "openclaw_site", "worker", "--loglevel", "WARNING",
               "--concurrency", "1", "--without-gossip", "--without-mingle"]
    if beat:
        command.append("--beat")
    return command
