"""The Redis client of the running event loop: one client and pool per loop and URL,
shared by everything in the process that talks to Redis (connection presence,
health sharing, the budget ledger, the rate limiter, the auth throttle).

Clients are bound to the loop that made them (see infra.loopbound), and their pool
waits for a free connection instead of failing: redis-py's default pool raises
"Too many connections" past 100 at once, and a burst of sockets authenticating
together must queue, not crash (close 1011)."""
from __future__ import annotations

from infra.loopbound import PerLoop

MAX_CONNECTIONS = 50
WAIT_FOR_CONNECTION_SECONDS = 10


def shared_redis_client(url: str):
    """The running loop's client for `url`, made on first use."""
    clients = _redis_clients.get()
    if url not in clients:
        clients[url] = _new_redis_client(url)
    return clients[url]


def _new_redis_client(url: str):
    import redis.asyncio as redis

    pool = redis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS,
                                                 timeout=WAIT_FOR_CONNECTION_SECONDS)
    return redis.Redis(connection_pool=pool)


_redis_clients = PerLoop(dict)
