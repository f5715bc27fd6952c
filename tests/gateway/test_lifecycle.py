"""The graceful drain on shutdown (gateway/lifecycle.py), in process: it ends by stopping
the process's runtime, then closing every database connection the process holds. The
drain of a real server on SIGTERM (1001, streams finished or billed):
tests/e2e/test_lifecycle.py."""
import asyncio

import pytest

from gateway import lifecycle
from gateway.runtime import runtime
from tests.support.runtime import background_tasks, expected_tasks
from tests.support.services import require

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_the_drain_ends_by_stopping_the_runtime(monkeypatch):
    monkeypatch.setattr(lifecycle, "draining", False)  # restored after the test
    await runtime.start()
    assert background_tasks() == expected_tasks()
    await lifecycle.drain(seconds=0)
    await asyncio.sleep(0)
    assert lifecycle.draining and not runtime.running and background_tasks() == []


@pytest.fixture
def own_session(transactional_db) -> int:
    """(PostgreSQL only.) The backend pid of the test's own connection (the main
    thread's, which the fixtures use and the flush after the test): not one a server
    would hold."""
    from django.db import connection

    require("postgresql")
    connection.ensure_connection()
    return connection.connection.info.backend_pid


def sessions_on_the_test_database(*not_counted: int) -> list[tuple]:
    """The PostgreSQL sessions on the test database, but this check's own and those
    named: (pid, state, last query). The test database is this test process's alone
    (end-to-end stacks make their own), so these are this process's connections. The
    check runs on a connection of its own, closed after it."""
    from django.db import connections

    checker = connections.create_connection("default")
    try:
        with checker.cursor() as cursor:
            cursor.execute("SELECT pid, state, left(query, 80) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid() AND NOT pid = ANY(%s)",
                           [list(not_counted)])
            return cursor.fetchall()
    finally:
        checker.close()


async def test_the_drain_closes_every_database_connection_of_the_process(
        own_session, monkeypatch, issued_key, make_deployment):
    from asgiref.sync import sync_to_async

    from tests.support.consumer import ask, authed, usage_of

    monkeypatch.setattr(lifecycle, "draining", False)
    await sync_to_async(make_deployment)()
    # A request opens connections where a server's do: its key lookup on the
    # thread-sensitive thread, its budget and rate-limit work on the pools, its usage
    # on the writer's thread; the configuration poller has its own.
    comm = await authed(issued_key)
    assert (await ask(comm, "r"))[-1]["type"] == "llm_response_end"
    await usage_of("r")
    await comm.disconnect()
    assert await asyncio.to_thread(sessions_on_the_test_database, own_session)

    await lifecycle.drain(seconds=0)

    # A session leaves pg_stat_activity a moment after its client closed it.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (left := await asyncio.to_thread(sessions_on_the_test_database, own_session)) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert left == [], f"sessions still open after the drain: {left}"
