"""One object per running event loop; background tasks and how they stop; tasks
that outlive their caller; jobs on every thread of a pool.

Redis clients, asyncio queues, semaphores and background tasks belong to the
event loop that created them. A gateway process has one loop for its life, but
tests (and management commands) run several in turn, so such objects are made
lazily for the running loop and remade when the loop changes.

The loop object itself is kept and compared, not its id(): a closed loop's id can
be reused by the next one, which would hand out an object bound to a dead loop.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Coroutine, Generic, Iterable, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._current: tuple[asyncio.AbstractEventLoop, T] | None = None

    def get(self) -> T:
        """The object for the running loop, made on first use."""
        loop = asyncio.get_running_loop()
        current = self._current
        if current is None or current[0] is not loop:
            current = self._current = (loop, self._factory())
        return current[1]

    def existing(self) -> T | None:
        """The running loop's object if one was made, without making one."""
        current = self._current
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return current[1] if current is not None and current[0] is loop else None

    def forget(self) -> None:
        """Drop the object (a fresh process, a test): the next get() makes a new one."""
        self._current = None


class Background:
    """One named task of the running loop, running `work()` until it is stopped.

    `start()` is idempotent (a task that ended is started again); `stop()` cancels it
    and waits until it has ended."""

    def __init__(self, name: str, work: Callable[[], Coroutine]) -> None:
        self.name = name
        self._work = work
        self._task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._work(), name=self.name)

    async def stop(self, timeout: float = 10) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            left = await stop_tasks([task], timeout)
            if left:
                raise RuntimeError(f"background task {self.name!r} would not stop within {timeout}s")


async def stop_tasks(tasks: Iterable[asyncio.Task], timeout: float = 30) -> set[asyncio.Task]:
    """Cancel the tasks and wait until each has ended; returns those still running at
    the timeout.

    A cancel that lands while redis-py is mid-read can be turned into a timeout and
    retried inside redis-py, so a single cancel may be lost and waiting for the task
    would hang; cancelling again until each task ends cannot."""
    pending = set(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(0.5, max(0.01, deadline - loop.time())))
    return pending


_spawned: set[asyncio.Task] = set()


def spawn(coroutine: Coroutine) -> None:
    """Run a coroutine in the background, not awaited (fire and forget). A strong
    reference is kept until it ends (the loop keeps only weak ones). Outside a
    running loop (process exit) the coroutine is dropped."""
    try:
        task = asyncio.get_running_loop().create_task(coroutine)
    except RuntimeError:
        coroutine.close()
        return
    _spawned.add(task)
    task.add_done_callback(_spawned.discard)


def on_every_worker(executor: ThreadPoolExecutor, job: Callable[[], object] = lambda: None,
                    timeout: float = 30) -> None:
    """Run `job` once on each worker thread of the pool, and return when every job
    queued before has finished (each worker takes one of these in turn, and a
    barrier keeps it from taking a second)."""
    workers = executor._max_workers
    barrier = threading.Barrier(workers)

    def run() -> None:
        job()
        barrier.wait(timeout)

    for future in [executor.submit(run) for _ in range(workers)]:
        future.result(timeout=2 * timeout)
