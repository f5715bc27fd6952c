"""This process's live connections (gateway/connections.py): what the drain shuts down
and what the configuration poller closes when a key is found unusable."""
import gc
from types import SimpleNamespace

import pytest

from gateway import connections


class Consumer:
    """Stands in for a GatewayConsumer: only its principal is read."""

    def __init__(self, key_id=None):
        self.principal = SimpleNamespace(key_id=key_id) if key_id is not None else None


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(connections, "_consumers", type(connections._consumers)())


def test_a_registered_connection_is_live_until_it_unregisters(registry):
    a, b = Consumer(1), Consumer(2)
    connections.register(a)
    connections.register(b)
    connections.register(a)  # once, however often
    assert connections.connection_count() == 2 and set(connections.live_connections()) == {a, b}
    connections.unregister(a)
    connections.unregister(a)  # a second release is harmless
    assert connections.live_connections() == [b]


def test_a_keys_connections_are_its_authenticated_ones_only(registry):
    first, second, other, unauthenticated = Consumer(7), Consumer(7), Consumer(8), Consumer()
    for consumer in (first, second, other, unauthenticated):
        connections.register(consumer)
    assert set(connections.connections_of_key(7)) == {first, second}
    assert connections.connections_of_key(9) == []


def test_a_connection_nobody_holds_any_more_is_forgotten(registry):
    connections.register(Consumer(1))  # a consumer that never unregistered, now gone
    gc.collect()
    assert connections.connection_count() == 0
