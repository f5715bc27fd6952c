"""The gateway process's lifecycle: live connections and a graceful drain on shutdown.

On SIGTERM (`openclaw_site/server.py`), the server calls `drain()` before
daphne cancels its applications: new requests are refused (503, retryable),
in-flight streams may finish until the deadline, the rest are stopped and
billed, every socket is closed with 1001 (client should reconnect), and the
usage recorder is flushed, so no record is lost.
"""
from __future__ import annotations

import asyncio
import logging
import weakref

from django.conf import settings

from billing.recorder import usage_recorder

log = logging.getLogger(__name__)

draining = False
_consumers: "weakref.WeakSet" = weakref.WeakSet()


def register(consumer) -> None:
    _consumers.add(consumer)


def unregister(consumer) -> None:
    _consumers.discard(consumer)


def connection_count() -> int:
    return len(_consumers)


def connections_of_key(key_id: int) -> list:
    """This process's authenticated connections using an API key."""
    return [c for c in list(_consumers) if c.principal is not None and c.principal.key_id == key_id]


async def drain(seconds: float | None = None) -> None:
    global draining
    draining = True
    seconds = settings.GATEWAY["SHUTDOWN_DRAIN_SECONDS"] if seconds is None else seconds
    consumers = list(_consumers)
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
        if not _consumers:
            break
        await asyncio.sleep(0.05)
    if not await usage_recorder.flush(timeout=15, set_aside_on_timeout=True):
        log.error("shutdown: some usage records could not be written; they are in the dead-letter file")
    await write_auth_failure_summaries()


async def write_auth_failure_summaries() -> None:
    """Failed-login bursts still open are summarised now rather than lost (tenants/auth_audit.py)."""
    from infra.threads import run_in_db_thread
    from tenants.auth_audit import failure_audit

    if failure_audit.pending():
        try:
            await asyncio.wait_for(run_in_db_thread(failure_audit.write_all), timeout=5)
        except Exception:
            log.error("shutdown: failed-login summaries could not be written", exc_info=True)
