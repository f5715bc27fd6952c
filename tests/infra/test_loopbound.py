"""Objects bound to the running event loop, tasks that outlive their caller, and jobs on
every thread of a pool (infra/loopbound.py)."""
import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from infra.loopbound import Background, PerLoop, on_every_worker, spawn


def test_per_loop_gives_one_object_per_loop_and_a_new_one_on_a_new_loop():
    made = []
    per_loop = PerLoop(lambda: made.append(object()) or made[-1])

    async def twice():
        return per_loop.get(), per_loop.get(), per_loop.existing()

    first, again, existing = asyncio.run(twice())
    assert first is again is existing  # one per loop, made once
    second, _, _ = asyncio.run(twice())
    assert second is not first and len(made) == 2  # a new loop gets a new object
    assert per_loop.existing() is None  # outside any loop there is none


async def test_existing_makes_nothing_and_forget_makes_the_next_get_new():
    per_loop = PerLoop(object)
    assert per_loop.existing() is None
    first = per_loop.get()
    per_loop.forget()
    assert per_loop.existing() is None and per_loop.get() is not first


async def test_a_spawned_task_runs_to_the_end_without_being_awaited():
    done = asyncio.Event()

    async def work():
        await asyncio.sleep(0)
        done.set()

    spawn(work())
    await asyncio.wait_for(done.wait(), 5)


def test_spawn_outside_a_running_loop_drops_the_coroutine_without_a_warning(recwarn):
    async def never():
        raise AssertionError("must not run")

    spawn(never())
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


async def test_a_background_task_starts_once_and_stop_waits_for_its_end():
    runs, stopped = [], asyncio.Event()

    async def work():
        runs.append(1)
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    task = Background("test-work", work)
    task.start()
    task.start()  # idempotent while running
    await asyncio.sleep(0)
    assert task.running and runs == [1]
    await task.stop()
    assert stopped.is_set() and not task.running


def test_on_every_worker_runs_the_job_once_on_each_thread_of_the_pool():
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="every") as pool:
        threads = []
        lock = threading.Lock()

        def job():
            with lock:
                threads.append(threading.current_thread().name)

        on_every_worker(pool, job)
        assert len(threads) == 3 and len(set(threads)) == 3
        assert all(name.startswith("every") for name in threads)
