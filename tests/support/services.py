"""Which external services the current test run uses, and whether they answer.

`python -m tests.support.services` exits 0 when PostgreSQL and Redis answer on
their usual loopback ports (the Makefile uses it to decide about the second
test pass). In tests, `require(name)` skips a test outside the pass that
configures the service, and under CI fails (never skips) when a configured
service is down.
"""
from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlparse

import pytest

DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379}


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _address(url: str, default_port: int) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or default_port


def require(name: str) -> None:
    """Skip unless this run is configured for the service; fail if configured but down under CI.

    A test that needs Redis or PostgreSQL runs in the services pass of `make test`
    (DATABASE_URL / REDIS_URL set) and is skipped in the embedded pass. When the
    service is configured but does not answer, CI fails rather than skipping.
    """
    url = os.environ.get("DATABASE_URL" if name == "postgresql" else "REDIS_URL", "")
    if not url:
        pytest.skip(f"{name} is not configured in this pass (it runs in the PostgreSQL/Redis pass)")
    host, port = _address(url, DEFAULT_PORTS[name])
    if reachable(host, port):
        return
    message = f"{name} at {host}:{port} does not answer"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI requires it)")
    pytest.skip(message)


if __name__ == "__main__":
    ok = all(reachable("127.0.0.1", port) for port in DEFAULT_PORTS.values())
    if "--quiet" not in sys.argv:
        print("services reachable" if ok else "services missing")
    sys.exit(0 if ok else 1)
