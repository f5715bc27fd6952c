"""The gateway process's graceful drain on shutdown.

On SIGTERM (`openclaw_site/server.py`), the server calls `drain()` before
daphne cancels its applications: new requests are refused (503, retryable),
in-flight streams may finish until the deadline, the rest are stopped and
billed, every socket is closed with 1001 (client should reconnect), and the
usage recorder is flushed, so no record is lost. Then the process's background
services stop (`gateway.runtime`), once nothing is left for them to do, and last
every database connection its threads hold is closed (`close_database_connections`),
so each PostgreSQL session ends cleanly rather than with the process.
"""
from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from billing.recorder import usage_recorder
from gateway.connections import connection_count, live_connections
from gateway.runtime import runtime

log = logging.getLogger(__name__)

draining = False


async def drain(seconds: float | None = None) -> None:
    global draining
    draining = True
    seconds = settings.GATEWAY["SHUTDOWN_DRAIN_SECONDS"] if seconds is None else seconds
    consumers = live_connections()
    log.info("draining %d connections for up to %ss", len(consumers), seconds)
    deadline = asyncio.get_running_loop().time() + seconds
    if consumers:
        results = await asyncio.gather(*(c.shut_down(deadline) for c in consumers), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.error("shutdown of a connection failed", exc_info=result)
    # Give the closing handshakes a moment to complete before the server stops,
    # so clients get a clean 1001 rather than a dropped connection.
    for _ in range(40):
        if not connection_count():
            break
        await asyncio.sleep(0.05)
    if not await usage_recorder.flush(timeout=15, set_aside_on_timeout=True):
        log.error("shutdown: some usage records could not be written; they are in the dead-letter file")
    await write_auth_failure_summaries()
    # The connections are closed and the usage written, so the lease keeper,
    # the configuration poller and the others have nothing left to do.
    await runtime.stop()
    # Last: nothing is left to use the database connections.
    try:
        await asyncio.wait_for(asyncio.to_thread(close_database_connections), timeout=10)
    except Exception:
        log.error("shutdown: some database connections could not be closed", exc_info=True)


def close_database_connections() -> None:
    """Close every database connection of the process's threads: the usage writer's,
    the pools' and the thread-sensitive thread's (infra/threads.py). Connections are
    persistent, so each would otherwise stay open until the process exits (and keep a
    test database from being dropped). Blocking: each thread closes its own once it
    has finished what it was doing."""
    from infra.threads import close_db_connections

    usage_recorder.close_connections()
    close_db_connections()


async def write_auth_failure_summaries() -> None:
    """Failed-login bursts still open are summarised now rather than lost (tenants/auth_audit.py)."""
    from infra.threads import run_in_db_thread
    from tenants.auth_audit import failure_audit

    if failure_audit.pending():
        try:
            await asyncio.wait_for(run_in_db_thread(failure_audit.write_all), timeout=5)
        except Exception:
            log.error("shutdown: failed-login summaries could not be written", exc_info=True)
