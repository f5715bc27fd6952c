"""Writing usage records off the token path.

A request hands its finished `UsageDraft` to `usage_recorder.submit()` (no
await, so cancellation cannot lose it). One task per event loop drains the
queue in batches on a dedicated thread, so a slow database never delays a
token frame or another consumer's database work (Channels' thread-sensitive
executor is not used). A gateway process starts that task with its runtime
(gateway/runtime.py) and stops it last on shutdown, after a final flush; a
record submitted where it is not running (a tool or test without the runtime,
a straggler after the stop) starts it, so no record ever waits for a writer
that is not there.

No record may hold up another. A batch that fails for a reason of the
database's (connection, operational errors) is retried with backoff: nothing
is dropped while the process lives. A batch that fails because of what a record
holds (a data or integrity error: `billing.deadletter.PERMANENT_ERRORS`) is
split in halves until the failing record is alone; every other record is
written and the failing one is set aside at once in the dead-letter file
(`billing.deadletter`), with a log line, for `manage.py replay_usage`. Its
budget reservation is settled as spend (see `_set_aside`). Shutdown flushes the
queue; what is still unwritten when the flush gives up is set aside too.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections

from billing import deadletter
from billing.usage import UsageDraft
from infra.loopbound import PerLoop, on_every_worker, stop_tasks

log = logging.getLogger(__name__)

BATCH_SIZE = 200
RETRY_DELAYS = (0.1, 0.5, 1, 2, 5)


class _Pending:
    """The running loop's queue of unwritten records, the records being written
    (by request id: those not yet written or set aside) and the task draining them."""

    def __init__(self, recorder: "UsageRecorder") -> None:
        self.recorder = recorder
        self.queue: asyncio.Queue[UsageDraft] = asyncio.Queue()
        self.writing: dict = {}
        self.idle = asyncio.Event()
        self.idle.set()
        self.task = self._start()

    def _start(self) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(self.recorder._run(self), name="usage-recorder")

    def keep_writing(self) -> None:
        """Start the writer again if it was stopped."""
        if self.task.done():
            self.task = self._start()

    def take_unwritten(self) -> list[UsageDraft]:
        """Stop the writer and hand over every record it had not written (it starts
        afresh for records submitted later)."""
        self.task.cancel()
        drafts = list(self.writing.values())
        self.writing.clear()
        while not self.queue.empty():
            drafts.append(self.queue.get_nowait())
        self.task = self._start()
        self.idle.set()
        return drafts


class UsageRecorder:
    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-writer")
        self._pending = PerLoop(lambda: _Pending(self))

    def start(self) -> None:
        """Start the running loop's writer (idempotent)."""
        self._pending.get().keep_writing()

    async def stop(self, timeout: float = 15) -> bool:
        """Write every record submitted so far, then stop the writer. Records still
        unwritten after `timeout` are set aside in the dead-letter file (as the
        shutdown flush does); returns False then."""
        written = True
        while (pending := self._pending.existing()) is not None and not pending.task.done():
            written = await self.flush(timeout, set_aside_on_timeout=True) and written
            if pending.idle.is_set():  # nothing was submitted since: the writer waits on an empty queue
                if await stop_tasks([pending.task], timeout=10):
                    raise RuntimeError("the usage writer would not stop")
        return written

    def submit(self, draft: UsageDraft) -> None:
        pending = self._pending.get()
        pending.keep_writing()
        pending.idle.clear()
        pending.queue.put_nowait(draft)

    async def flush(self, timeout: float = 30, *, set_aside_on_timeout: bool = False) -> bool:
        """Wait until every submitted record is written. False on timeout; then, with
        `set_aside_on_timeout` (shutdown), the records still unwritten are put in the
        dead-letter file rather than lost with the process."""
        pending = self._pending.existing()
        if pending is None:
            return True
        try:
            await asyncio.wait_for(pending.idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            unwritten = pending.queue.qsize() + len(pending.writing)
            if not set_aside_on_timeout:
                log.error("usage recorder: %d records still unwritten after %ss", unwritten, timeout)
                return False
        drafts = pending.take_unwritten()
        where = await self._spill(drafts, f"still unwritten when the shutdown flush gave up after {timeout}s")
        log.error("usage recorder: %d records still unwritten after %ss; set aside in %s "
                  "(manage.py replay_usage writes them)", len(drafts), timeout, where)
        return False

    async def _spill(self, drafts: list[UsageDraft], why: str):
        # Not on the writer's thread: it may be stuck in the database call that made us give up.
        where = await asyncio.to_thread(deadletter.set_aside, drafts, reason="shutdown", error=why)
        # Their leases are left to expire: the reaper then bills each request from its
        # own record if it was written after all, else from its checkpoint (docs/budgets.md).
        for draft in drafts:
            if draft.lease is not None:
                books_keeper_drop(draft.lease)
        return where

    async def _run(self, pending: _Pending) -> None:
        queue = pending.queue
        while True:
            batch = [await queue.get()]
            while len(batch) < BATCH_SIZE and not queue.empty():
                batch.append(queue.get_nowait())
            pending.writing.update((draft.request_id, draft) for draft in batch)
            await self._write(batch, pending)
            if queue.empty():
                pending.idle.set()

    async def _write(self, batch: list[UsageDraft], pending: _Pending) -> None:
        """Write the batch and settle its budget leases. An error of the database's is
        retried with backoff (then every RETRY_DELAYS[-1] s) until the batch lands;
        an error of a record's isolates it (halving the batch) and sets it aside.
        Both steps are idempotent, so a half written twice is harmless."""
        from billing.ledger import ledger

        loop = asyncio.get_running_loop()
        books = ledger()
        attempt = 0
        while True:
            try:
                await loop.run_in_executor(self._executor, _write_batch, books, batch)
            except Exception as exc:
                if deadletter.is_permanent(exc):
                    if len(batch) == 1:
                        await self._set_aside(batch[0], exc, books, pending)
                    else:
                        half = len(batch) // 2
                        await self._write(batch[:half], pending)
                        await self._write(batch[half:], pending)
                    return
                attempt = await _backoff(attempt, f"{len(batch)} records not written yet")
                continue
            # Written: settlement errors are the ledger store's state, always retried.
            while True:
                try:
                    await books.settle_written(batch)
                    break
                except Exception:
                    attempt = await _backoff(attempt, f"{len(batch)} written records not settled yet")
            for draft in batch:
                pending.writing.pop(draft.request_id, None)
                if draft.lease is not None:
                    books_keeper_drop(draft.lease)
            return

    async def _set_aside(self, draft: UsageDraft, error: BaseException, books, pending: _Pending) -> None:
        """A record the database refuses for good: into the dead-letter file, durably,
        before anything else; then its budget lease is settled as spend. The request
        was served and its cost is real, so it keeps counting against its budgets
        (at its own cost, or at the reserved worst case when its cost is itself the
        bad value) — a refused write must not hand the money back."""
        reason = deadletter.describe(error)
        try:
            where = await asyncio.to_thread(deadletter.set_aside, [draft], reason="permanent_error", error=reason)
        except OSError as exc:
            # The file cannot be written (disk full, permissions): the log is the last copy.
            log.critical("usage record %s could not be written nor set aside (%s); its record: %s",
                         draft.request_id, deadletter.describe(exc),
                         deadletter.encode(deadletter.entry(draft, reason="permanent_error", error=reason)))
            where = None
        pending.writing.pop(draft.request_id, None)
        if where is not None:
            log.error("usage record %s (client request id %s, org %s) cannot be written: %s; set aside in %s "
                      "(manage.py replay_usage)", draft.request_id, deadletter.printable(repr(draft.client_request_id)),
                      draft.org_id, reason, where)
        if draft.lease is None:
            return
        attempt = 0
        while True:
            try:
                await books.settle_set_aside([draft])
                break
            except Exception as exc:
                if deadletter.is_permanent(exc):
                    log.error("budget lease of set-aside usage record %s not settled (%s); it expires and is "
                              "reaped", draft.request_id, deadletter.describe(exc))
                    break
                attempt = await _backoff(attempt, f"lease of set-aside record {draft.request_id} not settled yet")
        books_keeper_drop(draft.lease)

    def wait_for_writer_thread(self) -> None:
        """Block until the writer thread has finished the database call it is making
        (before a test database is flushed: a write racing it would deadlock)."""
        on_every_worker(self._executor)

    def reset(self) -> None:
        """Forget the queue of a loop that is gone (a fresh process, tests)."""
        self._pending.forget()

    def close_connections(self) -> None:
        """Close the writer thread's database connection (process exit, test teardown)."""
        from django.db import connections

        self._executor.submit(connections.close_all).result(timeout=10)


async def _backoff(attempt: int, what: str) -> int:
    log.warning("usage recorder: %s (attempt %d); retrying", what, attempt + 1, exc_info=True)
    await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
    return attempt + 1


def _write_batch(books, batch: list[UsageDraft]) -> None:
    close_old_connections()
    books.write_and_settle(batch)


def books_keeper_drop(lease) -> None:
    """The lease is settled: stop extending it."""
    from billing.ledger import keeper

    keeper().drop(lease)


usage_recorder = UsageRecorder()
