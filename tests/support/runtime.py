"""The gateway process's runtime (gateway/runtime.py) in in-process tests.

A real server starts the runtime as it starts (openclaw_site/server.py). Tests
that drive the consumer through channels' WebsocketCommunicator have no server:
the runtime is started on the test's event loop when its first communicator
connects, as the server would have before accepting it. Tests that call the
pipeline or the billing objects directly run without it, as a tool would.
"""
from __future__ import annotations

import contextlib

from channels.testing import WebsocketCommunicator


@contextlib.contextmanager
def started_with_each_communicator():
    """While inside: every WebsocketCommunicator.connect() starts the runtime first
    (a no-op when it already runs on the test's loop)."""
    import pytest

    from gateway.runtime import runtime

    connect = WebsocketCommunicator.connect

    async def connect_with_runtime(self, *args, **kwargs):
        await runtime.start()
        return await connect(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WebsocketCommunicator, "connect", connect_with_runtime)
        yield


def expected_tasks() -> list[str]:
    """The names of the tasks a started runtime runs, sorted (Redis adds two)."""
    from django.conf import settings

    names = ["usage-recorder", "budget-leases", "freshness", "auth-audit-summaries"]
    if settings.REDIS_URL:
        names += ["health-sharing", "connection-presence"]
    return sorted(names)


def background_tasks() -> list[str]:
    """The names of the runtime's tasks alive on the running loop (one entry per task)."""
    import asyncio

    wanted = set(expected_tasks())
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name() in wanted and not t.done())
