"""Database connections of the dashboard's HTTP requests end with the request.

Under ASGI, Django runs each request's sync code (views, middleware, `response.close()`)
on a thread of that request's own (asgiref's `ThreadSensitiveContext`), which goes away
with the request. Its database connection does not: with persistent connections
(`DATABASE_CONN_MAX_AGE`, kept for the gateway's own long-lived threads) Django leaves it
open at `request_finished`, and nothing reuses it, so every dashboard page left a
PostgreSQL session behind until the garbage collector found it (about 5 per 100 pages,
enough to reach PostgreSQL's `max_connections` under a busy dashboard). Django's docs say
as much: under ASGI, persistent connections should not be used for requests.

So when a request served by the ASGI handler finishes, its thread closes its connections.
This runs in that thread (`response.close()` and the handler's own `request_finished`
are called there), costs a new connection per page (a few milliseconds on PostgreSQL), and
touches neither the WebSocket path (no `request_finished`) nor Django's test clients (their
requests are not sent by the ASGI handler).
"""
from __future__ import annotations

from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import connections


def close_request_connections(sender, **kwargs) -> None:
    if isinstance(sender, type) and issubclass(sender, ASGIHandler):
        connections.close_all()


def install() -> None:
    """Connect the receiver (idempotent: one receiver, whatever the number of calls)."""
    request_finished.connect(close_request_connections, dispatch_uid="openclaw.close_request_connections")
