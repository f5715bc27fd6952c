"""Counting a key's open connections, across every gateway process.

With Redis, each connection is a member of a sorted set per key, scored by
when its entry expires; one Lua script prunes expired entries, checks the
limit and adds the new one atomically (so two processes cannot both take the
last slot), and each process refreshes its own entries periodically, so a
crashed process's connections age out. Without Redis (the embedded default,
one gateway process) a counter in memory does the same job.
"""
from __future__ import annotations

import asyncio
import time
import uuid

from django.conf import settings

from infra.loopbound import PerLoop
from infra.redis_client import shared_redis_client

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
        self._refresher: asyncio.Task | None = None

    @staticmethod
    def _key(key_id: str) -> str:
        return f"openclaw:conns:{key_id}"

    async def acquire(self, key_id: str, limit: int) -> str | None:
        token = uuid.uuid4().hex
        ok = await self._acquire(keys=[self._key(key_id)], args=[time.time(), token, limit, ENTRY_TTL_SECONDS])
        if not ok:
            return None
        self._mine[(key_id, token)] = None
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_forever())
        return token

    async def release(self, key_id: str, token: str) -> None:
        self._mine.pop((key_id, token), None)
        await self._redis.zrem(self._key(key_id), token)

    async def _refresh_forever(self) -> None:
        while self._mine:
            await asyncio.sleep(REFRESH_SECONDS)
            expires = time.time() + ENTRY_TTL_SECONDS
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id, token in list(self._mine):
                    pipe.zadd(self._key(key_id), {token: expires}, xx=True)
                await pipe.execute()


_registry = PerLoop(lambda: RedisPresence(settings.REDIS_URL) if settings.REDIS_URL else LocalPresence())


def presence() -> LocalPresence | RedisPresence:
    """The presence registry of the running event loop (Redis clients are bound to a loop)."""
    return _registry.get()
