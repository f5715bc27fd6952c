"""This process's live WebSocket connections.

Consumers register when they accept and unregister when they release; the drain
(gateway/lifecycle.py) shuts down every registered one, and the configuration
poller (gateway/freshness.py) closes those of a key found unusable.
"""
from __future__ import annotations

import weakref

_consumers: "weakref.WeakSet" = weakref.WeakSet()


def register(consumer) -> None:
    _consumers.add(consumer)


def unregister(consumer) -> None:
    _consumers.discard(consumer)


def connection_count() -> int:
    return len(_consumers)


def live_connections() -> list:
    return list(_consumers)


def connections_of_key(key_id: int) -> list:
    """This process's authenticated connections using an API key."""
    return [c for c in list(_consumers) if c.principal is not None and c.principal.key_id == key_id]
