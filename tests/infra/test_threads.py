"""The gateway process's named thread pools (infra/threads.py): database work runs on
its pool's threads, never on the event loop's."""
import threading

import pytest
from django.db import connection

from infra import threads
from infra.threads import run_in_db_thread
from tenants.models import Organization

# run_in_db_thread checks the thread's connection first, as a request would.
pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_run_in_db_thread_runs_on_the_db_pool_and_returns_the_result():
    loop_thread = threading.current_thread().name
    name, total = await run_in_db_thread(lambda a, b: (threading.current_thread().name, a + b), 2, 3)
    assert total == 5
    assert name.startswith("budget-ledger") and name != loop_thread


async def test_run_in_db_thread_runs_on_the_pool_it_is_given():
    name = await run_in_db_thread(lambda: threading.current_thread().name, executor=threads.UPKEEP)
    assert name.startswith("budget-upkeep")


async def test_an_error_on_the_db_thread_reaches_the_caller():
    def fails():
        raise LookupError("nothing there")

    with pytest.raises(LookupError, match="nothing there"):
        await run_in_db_thread(fails)


async def test_database_work_on_the_db_thread_uses_that_threads_connection(org):
    def read():
        return connection.vendor, Organization.objects.filter(pk=org.pk).exists()

    assert await run_in_db_thread(read) == (connection.vendor, True)


def test_the_token_counting_pool_is_made_once_with_its_own_threads():
    pool = threads.token_counting()
    assert threads.token_counting() is pool
    assert pool.submit(lambda: threading.current_thread().name).result(5).startswith("token-count")
