"""Where token counting runs, so one org's huge prompts cannot starve the others.

Counting a big prompt is CPU work (litellm's tokenizer; about 20 µs of Python per
message plus 0.13 µs per character on a small VM), so a prompt too big to count on
the event loop is counted on a thread. Those threads are a pool of their own
(`OPENCLAW_TOKEN_COUNT_THREADS`, default 4), not the loop's default executor that
`asyncio.to_thread` and other code share, and each org has at most
`OPENCLAW_TOKEN_COUNTS_PER_ORG` counts (default 1) running or waiting for a thread
at a time — never all of the threads. An org that sends many huge prompts at once
has them counted one after another, while other orgs' counts find a free thread.

The org's slot is held until its count has finished on the thread, even if the
request was cancelled meanwhile (a thread cannot be interrupted): cancelling and
resending cannot put more of one org's counts on the pool.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Callable, Hashable, TypeVar

from django.conf import settings

from infra.loopbound import PerLoop
from infra.threads import token_counting

T = TypeVar("T")

def pool_size() -> int:
    return settings.GATEWAY["TOKEN_COUNT_THREADS"]


def per_org() -> int:
    """The counts one org may have at once: the setting, but always at least one
    thread short of the whole pool (when the pool has more than one)."""
    threads = pool_size()
    return max(1, min(settings.GATEWAY["TOKEN_COUNTS_PER_ORG"], threads - 1))


@dataclass
class _Slots:
    free: asyncio.Semaphore
    users: int = 0  # counts holding or waiting for a slot; the entry goes when none are left


@dataclass
class OrgGate:
    """At most `limit` counts per org at once; waiters are served in arrival order."""

    limit: int
    _orgs: dict[Hashable, _Slots] = field(default_factory=dict)

    async def acquire(self, org: Hashable) -> None:
        slots = self._orgs.get(org)
        if slots is None:
            slots = self._orgs[org] = _Slots(asyncio.Semaphore(self.limit))
        slots.users += 1
        try:
            await slots.free.acquire()
        except BaseException:
            self._leave(org, slots)
            raise

    def release(self, org: Hashable) -> None:
        slots = self._orgs[org]
        slots.free.release()
        self._leave(org, slots)

    def busy(self, org: Hashable) -> int:
        """Counts of `org` holding or waiting for a slot (for tests and diagnostics)."""
        slots = self._orgs.get(org)
        return slots.users if slots else 0

    def _leave(self, org: Hashable, slots: _Slots) -> None:
        slots.users -= 1
        if slots.users == 0 and self._orgs.get(org) is slots:
            del self._orgs[org]


_gates: PerLoop[OrgGate] = PerLoop(lambda: OrgGate(per_org()))


def gate() -> OrgGate:
    """The running loop's per-org gate."""
    return _gates.get()


async def run_counting(org: Hashable, work: Callable[..., T], *args) -> T:
    """`work(*args)` on the counting pool, within `org`'s share of it."""
    org_gate = gate()
    await org_gate.acquire(org)
    try:
        job = asyncio.get_running_loop().run_in_executor(token_counting(), work, *args)
    except BaseException:
        org_gate.release(org)
        raise

    def finished(done: asyncio.Future) -> None:
        org_gate.release(org)
        if not done.cancelled():
            done.exception()  # retrieved: a caller cancelled meanwhile no longer awaits it

    job.add_done_callback(finished)
    # Shielded: a cancelled request stops waiting, but its slot stays taken until
    # the thread is done with the count.
    return await asyncio.shield(job)
