"""Counting a key's open connections, across every gateway process.

With Redis, each connection is a member of a sorted set per key, scored by
when its entry expires; one Lua script prunes expired entries, checks the
limit and adds the new one atomically (so two processes cannot both take the
last slot), and each process refreshes its own entries periodically (a task
that runs with the process, gateway/runtime.py), so a crashed process's
connections age out. Without Redis (the embedded default,
one gateway process) a counter in memory does the same job.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid

from django.conf import settings

from infra.loopbound import Background, PerLoop
from infra.redis_client import shared_redis_client

log = logging.getLogger(__name__)

ENTRY_TTL_SECONDS = 90
REFRESH_SECONDS = 30

_ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]) * 2)
return 1
"""


class LocalPresence:
    def __init__(self) -> None:
        self._members: dict[str, set[str]] = {}

    def start(self) -> None:
        pass  # nothing to refresh: the counts die with the process

    async def stop(self) -> None:
        pass

    async def acquire(self, key_id: str, limit: int) -> str | None:
        members = self._members.setdefault(key_id, set())
        if len(members) >= limit:
            return None
        token = uuid.uuid4().hex
        members.add(token)
        return token

    async def release(self, key_id: str, token: str) -> None:
        members = self._members.get(key_id)
        if members is not None:
            members.discard(token)
            if not members:
                del self._members[key_id]


class RedisPresence:
    def __init__(self, url: str) -> None:
        self._redis = shared_redis_client(url)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._mine: dict[tuple[str, str], None] = {}
        self._refresher = Background("connection-presence", self._refresh_forever)

    def start(self) -> None:
        """Start refreshing this process's entries (idempotent)."""
        self._refresher.start()

    async def stop(self) -> None:
        """Stop refreshing: this process's entries age out within ENTRY_TTL_SECONDS."""
        await self._refresher.stop()

    @staticmethod
    def _key(key_id: str) -> str:
        return f"openclaw:conns:{key_id}"

    async def acquire(self, key_id: str, limit: int) -> str | None:
        token = uuid.uuid4().hex
        ok = await self._acquire(keys=[self._key(key_id)], args=[time.time(), token, limit, ENTRY_TTL_SECONDS])
        if not ok:
            return None
        self._mine[(key_id, token)] = None
        return token

    async def release(self, key_id: str, token: str) -> None:
        self._mine.pop((key_id, token), None)
        await self._redis.zrem(self._key(key_id), token)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            if not self._mine:
                continue
            expires = time.time() + ENTRY_TTL_SECONDS
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key_id, token in list(self._mine):
                        pipe.zadd(self._key(key_id), {token: expires}, xx=True)
                    await pipe.execute()
            except Exception:
                log.warning("could not refresh this process's connection entries; retrying", exc_info=True)


_registry = PerLoop(lambda: RedisPresence(settings.REDIS_URL) if settings.REDIS_URL else LocalPresence())


def presence() -> LocalPresence | RedisPresence:
    """The presence registry of the running event loop (Redis clients are bound to a loop)."""
    return _registry.get()


def reset() -> None:
    """Forget this process's connection entries (gateway.runtime.reset)."""
    _registry.forget()
