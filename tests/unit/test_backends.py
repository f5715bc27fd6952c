"""The run uses the backends its environment names: SQLite/in-memory by default,
PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set (the second CI pass)."""
import os

import pytest
from channels.layers import get_channel_layer
from django.db import connection


@pytest.mark.django_db
def test_the_database_is_the_configured_one():
    expected = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert connection.vendor == expected


async def test_the_channel_layer_is_the_configured_one_and_delivers():
    layer = get_channel_layer()
    expected = "RedisChannelLayer" if os.environ.get("REDIS_URL") else "InMemoryChannelLayer"
    assert type(layer).__name__ == expected
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "control.test", "n": 1})
    assert (await layer.receive(channel))["n"] == 1
