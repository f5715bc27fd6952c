"""A key's open connections (gateway/key_connections.py): over the per-key limit a
socket gets 429 and close 4429, and a closed socket frees its slot (counted across
processes with Redis in the services pass)."""
import pytest
from channels.testing import WebsocketCommunicator

from openclaw_site.asgi import application
from tests.support.consumer import authed
from tests.support.frames import next_frame, send_frame

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def two_connections_per_key(settings):
    settings.GATEWAY = {**settings.GATEWAY, "MAX_CONNECTIONS_PER_KEY": 2}


async def test_connections_over_the_per_key_limit_get_429_and_close_4429(issued_key, two_connections_per_key):
    first = await authed(issued_key)
    second = await authed(issued_key)
    third = WebsocketCommunicator(application, "/websocket")
    await third.connect()
    await send_frame(third, {"type": "auth", "token": issued_key.raw})
    error = await next_frame(third)
    assert (error["code"], error["error"], error["retryable"]) == (429, "rate_limited", True)
    assert (await third.receive_output(timeout=5))["code"] == 4429
    await third.disconnect()
    await first.disconnect()
    fourth = await authed(issued_key)  # a slot was freed
    await second.disconnect()
    await fourth.disconnect()
