"""What an idle authenticated socket holds in its gateway process (docs/benchmarks.md,
"Idle connections at 15,000"): its own task, no channel-layer channel, no group
memberships of its own."""
import asyncio

import pytest

from tests.support.consumer import authed
from tests.support.frames import next_frame, send_frame

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_an_idle_authenticated_socket_runs_no_task_besides_its_own(issued_key):
    from gateway.revocation import control_listener

    first = await authed(issued_key)  # the runtime and the process's control listener run from here
    await asyncio.sleep(0.1)
    before = {t for t in asyncio.all_tasks() if not t.done()}
    more = [await authed(issued_key) for _ in range(3)]
    await asyncio.sleep(0.1)
    added = {t for t in asyncio.all_tasks() if not t.done()} - before
    assert len(added) == 3, sorted(t.get_name() for t in added)  # one per socket: the communicator's application
    assert set(control_listener().groups().values()) == {4}  # one membership per group for all four
    for comm in [first, *more]:
        await send_frame(comm, {"type": "ping"})
        assert (await next_frame(comm))["type"] == "pong"
        await comm.disconnect()
    assert control_listener().groups() == {}
