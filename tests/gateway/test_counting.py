"""Where big prompts are counted (gateway/counting.py): a thread pool of their own and a
fair share per org, so one org's huge prompts queue behind each other and never block
another org's. Reached through `count_prompt_tokens` and `fit_prompt` (gateway/tokens.py),
as the request path reaches it."""
import asyncio
import os
import threading

from gateway import counting, tokens
from gateway.tokens import count_prompt_tokens, fit_prompt


class BlockingCounter:
    """Stands in for the tokenizer: org A's counts block until released; records how
    many of org A's counts run at once and on which threads."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.running = self.most_running = 0
        self.threads: set[str] = set()

    def __call__(self, model, messages):
        if messages and messages[0]["content"].startswith("A"):
            with self.lock:
                self.running += 1
                self.most_running = max(self.most_running, self.running)
                self.threads.add(threading.current_thread().name)
            try:
                assert self.release.wait(30), "never released"
            finally:
                with self.lock:
                    self.running -= 1
        return 7


def huge(org: str) -> list[dict]:
    return [{"role": "user", "content": org + "x" * 100_000}]  # far over the inline limit


async def test_one_orgs_huge_counts_queue_behind_each_other_and_never_block_another_orgs(monkeypatch):
    counter = BlockingCounter()
    monkeypatch.setattr(tokens, "_count_messages", counter)
    # More of org A's counts at once than the default executor has threads, so that
    # sharing it (as before) would leave org B no thread at all.
    many = min(32, (os.cpu_count() or 1) + 4) + 2
    a = [asyncio.create_task(count_prompt_tokens("gpt-4o", huge("A"), org="org-a")) for _ in range(many)]
    try:
        await asyncio.sleep(0.2)
        assert counter.running == counting.per_org() == 1  # one at a time; the rest wait their turn
        assert await asyncio.wait_for(count_prompt_tokens("gpt-4o", huge("B"), org="org-b"), 5) == 7
        # Through fitting too: org B's truncation while org A's counts are still blocked.
        fitted = await asyncio.wait_for(fit_prompt("gpt-4o", huge("B") * 2, 100, 10, org="org-b"), 5)
        assert fitted.removed_messages == 1
        assert not any(task.done() for task in a)
    finally:
        counter.release.set()
    assert await asyncio.wait_for(asyncio.gather(*a), 30) == [7] * many
    assert counter.most_running == 1 and all(name.startswith("token-count") for name in counter.threads)
    assert counting.gate().busy("org-a") == 0  # nothing left behind per org


async def test_a_cancelled_count_keeps_its_orgs_slot_until_its_thread_is_done(monkeypatch):
    counter = BlockingCounter()
    monkeypatch.setattr(tokens, "_count_messages", counter)
    first = asyncio.create_task(count_prompt_tokens("gpt-4o", huge("A"), org="org-a"))
    try:
        await asyncio.sleep(0.1)
        first.cancel()
        await asyncio.sleep(0.05)
        # The request is gone but its count still runs on a thread: a new one of the
        # same org waits for it instead of taking a second thread.
        second = asyncio.create_task(count_prompt_tokens("gpt-4o", huge("A"), org="org-a"))
        await asyncio.sleep(0.1)
        assert counter.running == 1 and counting.gate().busy("org-a") == 2
    finally:
        counter.release.set()
    assert await asyncio.wait_for(second, 10) == 7
    assert first.cancelled() and counter.most_running == 1 and counting.gate().busy("org-a") == 0
