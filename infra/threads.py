"""Every thread pool of a gateway process, named in one place.

Database work never runs on the event loop, nor on Channels' thread-sensitive
executor (one slow write would hold up every other caller there). Each kind of
work has a pool of its own, so a burst of one cannot delay another:

- `DB`: budget reservations and settlements, rate-limit counters, throttle and
  audit writes on the request path (4 threads).
- `UPKEEP`: budget lease extensions and the lease reaper (1 thread): a burst of
  reservations queued on `DB` must never delay an extension past the lease, or
  the request would be taken for a lost process's and billed from its checkpoint.
- `FRESHNESS`: the configuration poller's reads (1 thread, its own connection).
- `NOTICES`: handing budget notices to Celery (2 threads: a slow broker never
  blocks a request).
- `token_counting()`: counting big prompts (`OPENCLAW_TOKEN_COUNT_THREADS`, made on
  first use, see gateway/counting.py).

The usage recorder owns its single writer thread (billing/recorder.py): its
connection is the one that writes usage, and tests check which it is.

One thread outside these pools also holds a connection: asgiref's thread-sensitive
thread, where channels' `database_sync_to_async` runs (key lookups, deployment,
policy and budget loads). Connections are persistent (`CONN_MAX_AGE`), so each of
these threads keeps its own open until `close_db_connections()` closes them (the
end of the shutdown drain, gateway/lifecycle.py).
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import SyncToAsync
from django.db import close_old_connections

from infra.loopbound import on_every_worker

DB = ThreadPoolExecutor(max_workers=4, thread_name_prefix="budget-ledger")
UPKEEP = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budget-upkeep")
FRESHNESS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="freshness")
NOTICES = ThreadPoolExecutor(max_workers=2, thread_name_prefix="budget-notice")

_token_counting: ThreadPoolExecutor | None = None
_token_counting_lock = threading.Lock()


def token_counting() -> ThreadPoolExecutor:
    """The token-counting threads (made on first use; the size is read once per process)."""
    from django.conf import settings

    global _token_counting
    with _token_counting_lock:
        if _token_counting is None:
            _token_counting = ThreadPoolExecutor(max_workers=settings.GATEWAY["TOKEN_COUNT_THREADS"],
                                                 thread_name_prefix="token-count")
        return _token_counting


async def run_in_db_thread(fn, *args, executor: ThreadPoolExecutor | None = None):
    """`fn(*args)` on a database pool (`DB` unless another is given), with Django's
    stale-connection check first, as a request would have."""
    def run():
        close_old_connections()
        return fn(*args)

    return await asyncio.get_running_loop().run_in_executor(executor or DB, run)


DATABASE_POOLS = (DB, UPKEEP, FRESHNESS)


def close_db_connections() -> None:
    """Close the database connections held by the pools' threads and by asgiref's
    thread-sensitive thread (a stopping process does, so PostgreSQL sees each session
    end; a test run does, so its test database can be dropped). Each thread closes its
    own, once it has finished the work queued before; a thread that needs its
    connection again opens a new one."""
    from django.db import connections

    for pool in DATABASE_POOLS:
        on_every_worker(pool, connections.close_all)
    # The thread `database_sync_to_async` (thread-sensitive) uses outside a sync caller
    # or a ThreadSensitiveContext: a consumer's, in a server process and in tests.
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)


def drain_pools() -> None:
    """Wait until every database pool has finished the work queued on it."""
    for pool in DATABASE_POOLS:
        on_every_worker(pool)
