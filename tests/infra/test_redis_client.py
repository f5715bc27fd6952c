"""The Redis client of the running loop (infra/redis_client.py): one per loop and URL,
with a pool that waits for a free connection. Needs Redis: the services pass."""
import asyncio
import os

import pytest

from infra import redis_client
from infra.redis_client import shared_redis_client
from tests.support.services import require


@pytest.fixture
def redis_url():
    require("redis")
    return os.environ["REDIS_URL"]


async def test_one_client_per_loop_and_url(redis_url):
    client = shared_redis_client(redis_url)
    assert shared_redis_client(redis_url) is client
    other_db = redis_url.rsplit("/", 1)[0] + "/15"
    assert shared_redis_client(other_db) is not client
    assert await client.ping()


def test_a_new_loop_gets_a_new_client(redis_url):
    async def client_and_ping():
        client = shared_redis_client(redis_url)
        assert await client.ping()
        await client.aclose()
        return client

    assert asyncio.run(client_and_ping()) is not asyncio.run(client_and_ping())


async def test_the_pool_waits_for_a_free_connection_instead_of_failing(redis_url):
    import redis.asyncio as redis

    pool = shared_redis_client(redis_url).connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.max_connections == redis_client.MAX_CONNECTIONS
    assert pool.timeout == redis_client.WAIT_FOR_CONNECTION_SECONDS
