"""Writing usage records off the token path.

A request hands its finished `UsageDraft` to `usage_recorder.submit()` (no
await, so cancellation cannot lose it). One task per event loop drains the
queue in batches on a dedicated thread, so a slow database never delays a
token frame or another consumer's database work (Channels' thread-sensitive
executor is not used). A failed write is retried with backoff; nothing is
dropped while the process lives, and shutdown flushes the queue.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections

from billing.services import UsageDraft
from gateway.loopbound import PerLoop

log = logging.getLogger(__name__)

BATCH_SIZE = 200
RETRY_DELAYS = (0.1, 0.5, 1, 2, 5)


class _Pending:
    """The running loop's queue of unwritten records and the task draining it."""

    def __init__(self, recorder: "UsageRecorder") -> None:
        self.queue: asyncio.Queue[UsageDraft] = asyncio.Queue()
        self.idle = asyncio.Event()
        self.idle.set()
        self.task = asyncio.get_running_loop().create_task(recorder._run(self), name="usage-recorder")


class UsageRecorder:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-writer")
        self._pending = PerLoop(lambda: _Pending(self))

    def submit(self, draft: UsageDraft) -> None:
        pending = self._pending.get()
        pending.idle.clear()
        pending.queue.put_nowait(draft)

    async def flush(self, timeout: float = 30) -> bool:
        """Wait until every submitted record is written. False on timeout."""
        pending = self._pending.existing()
        if pending is None:
            return True
        try:
            await asyncio.wait_for(pending.idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            log.error("usage recorder: %d records still unwritten after %ss", pending.queue.qsize(), timeout)
            return False

    async def _run(self, pending: _Pending) -> None:
        queue = pending.queue
        while True:
            batch = [await queue.get()]
            while len(batch) < BATCH_SIZE and not queue.empty():
                batch.append(queue.get_nowait())
            await self._write(batch)
            if queue.empty():
                pending.idle.set()

    async def _write(self, batch: list[UsageDraft]) -> None:
        """Write the batch and settle its budget leases, retrying with backoff (then
        every RETRY_DELAYS[-1] s) until it lands. Both steps are idempotent."""
        from billing.ledger import ledger

        loop = asyncio.get_running_loop()
        books = ledger()
        attempt = 0
        while True:
            try:
                await loop.run_in_executor(self._executor, _write_batch, books, batch)
                await books.settle_written(batch)
                for draft in batch:
                    if draft.lease is not None:
                        books_keeper_drop(draft.lease)
                return
            except Exception:
                log.warning("usage recorder: %d records not written yet (attempt %d); retrying",
                            len(batch), attempt + 1, exc_info=True)
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1

    def close_connections(self) -> None:
        """Close the writer thread's database connection (process exit, test teardown)."""
        from django.db import connections

        self._executor.submit(connections.close_all).result(timeout=10)


def _write_batch(books, batch: list[UsageDraft]) -> None:
    close_old_connections()
    books.write_and_settle(batch)


def books_keeper_drop(lease) -> None:
    """The lease is settled: stop extending it."""
    from billing.ledger import keeper

    keeper().drop(lease)


usage_recorder = UsageRecorder()
