"""The graceful drain on shutdown (gateway/lifecycle.py), in process: it ends by stopping
the process's runtime. The drain of a real server on SIGTERM (1001, streams finished or
billed): tests/e2e/test_lifecycle.py."""
import asyncio

import pytest

from gateway import lifecycle
from gateway.runtime import runtime
from tests.support.runtime import background_tasks, expected_tasks

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_the_drain_ends_by_stopping_the_runtime(monkeypatch):
    monkeypatch.setattr(lifecycle, "draining", False)  # restored after the test
    await runtime.start()
    assert background_tasks() == expected_tasks()
    await lifecycle.drain(seconds=0)
    await asyncio.sleep(0)
    assert lifecycle.draining and not runtime.running and background_tasks() == []
