"""Failed authentication, throttled per client address and per key lookup.

Each failure is counted against the client's address (`infra/client_address.py`:
the peer, or the forwarded address when the peer is a trusted proxy) and, for a
well-formed key, against its lookup id. A counter's window starts at its first
failure and lasts `AUTH_FAILURE_WINDOW_SECONDS`; once it holds its limit
(`AUTH_FAILURES_PER_ADDRESS`, `AUTH_FAILURES_PER_KEY`), further attempts are
answered 429 `rate_limited` with `retry_after_ms` = the time left in the window
and closed 4429, before any database work.

The lookup id is public (it is printed in every key's prefix), so anyone can
make a key's lookup counter hit its limit. A throttled lookup therefore only
stops *wrong* secrets: the presented key's digest is compared with the key's
stored digest, read once and cached (`_known`), and a match goes on to the
normal authentication. An attacker hammering a victim's prefix gets 429s and
costs at most one small query per lookup per `KNOWN_KEY_SECONDS` per process;
the victim keeps authenticating. The address limit stops everything from that
address: it is the address that failed.

Attempts already in progress when a limit is reached still finish (failures are
counted when they happen, so a legitimate reconnect storm of correct keys from
one address is never refused); the overshoot is at most the attempts in flight.

Counters live in Redis when it is configured (shared by every gateway process,
one Lua script per check), in memory otherwise (the embedded default's single
process). Refused attempts are counted into the audit summaries
(tenants/auth_audit.py) and never written one by one.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection

from infra.loopbound import Background, PerLoop, spawn
from tenants.auth_audit import Failure, failure_audit, write as write_audit
from tenants.keys import digests_match, display_prefix

log = logging.getLogger(__name__)

KNOWN_KEY_SECONDS = 60.0
UNKNOWN_KEY_SECONDS = 5.0  # a lookup with no key: short, so a key created later is found soon
_KNOWN_LIMIT = 10_000


class AuthThrottled(Exception):
    def __init__(self, what: str, retry_after_ms: int) -> None:
        self.retry_after_ms = max(1, int(retry_after_ms))
        self.message = (f"too many failed authentications {what}; retry in "
                        f"{self.retry_after_ms / 1000:.1f}s")
        super().__init__(self.message)


def _window_ms() -> int:
    return int(settings.GATEWAY["AUTH_FAILURE_WINDOW_SECONDS"] * 1000)


class MemoryCounters:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}  # name -> (failures, window end, monotonic)

    async def retry_ms(self, limits: list[tuple[str, int]]) -> list[int]:
        """For each (counter, limit): 0 if below its limit, else the ms left in its window."""
        now = time.monotonic()
        answers = []
        for name, limit in limits:
            count, end = self._counts.get(name, (0, 0.0))
            answers.append(max(1, int((end - now) * 1000)) if end > now and count >= limit else 0)
        return answers

    async def failed(self, names: list[str]) -> None:
        now = time.monotonic()
        if len(self._counts) > 100_000:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        for name in names:
            count, end = self._counts.get(name, (0, 0.0))
            if end <= now:
                count, end = 0, now + _window_ms() / 1000
            self._counts[name] = (count + 1, end)

    def clear(self) -> None:
        self._counts.clear()


# KEYS: counters; ARGV: their limits. Returns, per counter, 0 or the ms left in its window.
_CHECK = """
local out = {}
for i = 1, #KEYS do
  local count = tonumber(redis.call('GET', KEYS[i]) or '0')
  local left = 0
  if count >= tonumber(ARGV[i]) then
    left = redis.call('PTTL', KEYS[i])
    if left <= 0 then left = 1 end
  end
  out[i] = left
end
return out
"""

# KEYS: counters; ARGV[1]: window ms. A counter's window starts at its first failure.
_FAIL = """
for i = 1, #KEYS do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
return 0
"""


class RedisCounters:
    def __init__(self, url: str) -> None:
        from infra.redis_client import shared_redis_client

        self._redis = shared_redis_client(url)
        self.prefix = f"openclaw:authfail:{connection.settings_dict['NAME']}"
        self._check = self._redis.register_script(_CHECK)
        self._fail = self._redis.register_script(_FAIL)

    def _key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    async def retry_ms(self, limits: list[tuple[str, int]]) -> list[int]:
        result = await self._check(keys=[self._key(n) for n, _ in limits], args=[limit for _, limit in limits])
        return [int(x) for x in result]

    async def failed(self, names: list[str]) -> None:
        await self._fail(keys=[self._key(n) for n in names], args=[_window_ms()])


_counters = PerLoop(lambda: RedisCounters(settings.REDIS_URL) if settings.REDIS_URL else MemoryCounters())


def counters() -> MemoryCounters | RedisCounters:
    return _counters.get()


def address_counter(subject: str) -> str:
    return f"addr:{subject}"


def lookup_counter(lookup: str) -> str:
    return f"key:{lookup}"


# --- the stored digest of a throttled lookup --------------------------------------------

@dataclass(frozen=True)
class KnownKey:
    digest: str
    org: object  # Organization
    display: str


_known: dict[str, tuple[float, KnownKey | None]] = {}


def _load_known(lookup: str) -> KnownKey | None:
    from tenants.models import ApiKey

    row = ApiKey.objects.select_related("org").filter(lookup=lookup).first()
    return KnownKey(digest=row.digest, org=row.org, display=row.display) if row else None


async def known_key(lookup: str) -> KnownKey | None:
    from infra.threads import run_in_db_thread

    now = time.monotonic()
    cached = _known.get(lookup)
    if cached is not None and cached[0] > now:
        return cached[1]
    known = await run_in_db_thread(_load_known, lookup)
    if len(_known) > _KNOWN_LIMIT:
        _known.clear()
    _known[lookup] = (now + (KNOWN_KEY_SECONDS if known else UNKNOWN_KEY_SECONDS), known)
    return known


# --- the audit summaries' background writer ----------------------------------------------

class SummaryFlusher:
    """Writes burst summaries within a second of their window's end (runs with the
    gateway process, gateway/runtime.py; a second with no burst open costs nothing)."""

    def __init__(self) -> None:
        self._task = Background("auth-audit-summaries", self._run)

    def start(self) -> None:
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def _run(self) -> None:
        from infra.threads import run_in_db_thread

        while True:
            await asyncio.sleep(1)
            if not failure_audit.pending():
                continue
            try:
                await run_in_db_thread(failure_audit.write_due)
            except Exception:
                log.warning("could not write authentication failure summaries", exc_info=True)


_flusher = PerLoop(SummaryFlusher)


def flusher() -> SummaryFlusher:
    return _flusher.get()


# --- one attempt ----------------------------------------------------------------------------

def _limits() -> tuple[int, int]:
    return settings.GATEWAY["AUTH_FAILURES_PER_ADDRESS"], settings.GATEWAY["AUTH_FAILURES_PER_KEY"]


async def check(*, subject: str | None, lookup: str | None, digest: str | None, source: str,
                address: str | None) -> None:
    """Raise AuthThrottled if this attempt must be refused without touching the database."""
    per_address, per_key = _limits()
    limits = []
    if subject is not None:
        limits.append((address_counter(subject), per_address))
    if lookup is not None:
        limits.append((lookup_counter(lookup), per_key))
    if not limits:
        return
    answers = dict(zip((name for name, _ in limits), await counters().retry_ms(limits)))
    if subject is not None and answers[address_counter(subject)]:
        _count_refusal(None, "", source, address, display_prefix(lookup) if lookup else "")
        raise AuthThrottled("from this address", answers[address_counter(subject)])
    if lookup is not None and answers[lookup_counter(lookup)]:
        known = await known_key(lookup)
        if known is not None and digest is not None and digests_match(known.digest, digest):
            return  # the right secret: others' failures on this public prefix never stop it
        _count_refusal(known.org if known else None, known.display if known else "", source, address,
                       display_prefix(lookup))
        raise AuthThrottled("with this key", answers[lookup_counter(lookup)])


async def failed(*, subject: str | None, lookup: str | None) -> None:
    names = ([address_counter(subject)] if subject is not None else []) + \
            ([lookup_counter(lookup)] if lookup is not None else [])
    if names:
        await counters().failed(names)


def _count_refusal(org, actor: str, source: str, address: str | None, name: str) -> None:
    # Counted for the burst's summary only: a refusal never writes a row of its own.
    due = failure_audit.note(Failure(org=org, actor=actor, action="auth.failed", reason="throttled", source=source,
                                     address=address, name=name), immediate=False)
    if due:  # summaries already due: hand them to the database threads, not this loop
        from infra.threads import run_in_db_thread

        spawn(run_in_db_thread(write_audit, due))


def reset() -> None:
    """Forget this process's known keys, in-memory counters and summary writer
    (gateway.runtime.reset; counters in Redis are shared: see forget_failures)."""
    _known.clear()
    _counters.forget()
    _flusher.forget()


def forget_failures() -> None:
    """Drop every failure counter of this database (tests; an operator may do the same in Redis)."""
    current = _counters._current
    if current is not None and isinstance(current[1], MemoryCounters):
        current[1].clear()
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"openclaw:authfail:{connection.settings_dict['NAME']}:*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
