"""A real gateway process runs its background services from its start, before any
client connects, and stops them at the end of its drain (gateway/runtime.py)."""
import signal
import time

import pytest

pytestmark = pytest.mark.e2e

SERVICES = ("usage recorder", "budget lease keeper", "configuration poller", "failed-login summaries")


def log_line(stack, port: int, text: str, timeout: float = 5) -> str:
    deadline = time.monotonic() + timeout
    while True:
        for line in stack.log(port).splitlines():
            if text in line:
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no {text!r} in the gateway's log:\n{stack.log(port)[-3000:]}")
        time.sleep(0.05)


def test_services_start_with_the_server_and_stop_at_the_end_of_the_drain(stack):
    port = stack.start_gateway()
    process = dict(stack.processes)[f"gateway:{port}"]
    # Listening, and no client has connected (the start-up wait only opened a TCP socket).
    started = log_line(stack, port, "gateway runtime started:")
    assert all(name in started for name in SERVICES), started
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) is not None
    log = stack.log(port)
    stopped = log_line(stack, port, "gateway runtime stopped:", timeout=0)
    assert all(name in stopped for name in SERVICES), stopped
    assert "with errors" not in stopped and "did not stop cleanly" not in log
    assert log.index("draining 0 connections") < log.index("gateway runtime stopped:")
