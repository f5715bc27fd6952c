"""The process's health probes for load balancers and orchestrators: liveness, and
readiness of what it depends on (database, channel layer, Celery broker)."""
from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 3


async def healthz(request):
    """Liveness: the process is up and serving HTTP."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    # A connection of its own each time, closed after: the check runs on whichever
    # thread of the loop's default executor is free, where nothing else closes a
    # connection (Django does at the end of a request, on the request's thread). A
    # persistent one (CONN_MAX_AGE) left there broken by a database restart would
    # fail every later check on that thread, and none would be closed at shutdown.
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


async def _check_channel_layer() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "readyz.probe"})
    await layer.receive(channel)


def _check_broker() -> None:
    from kombu import Connection

    with Connection(settings.CELERY_BROKER_URL, connect_timeout=CHECK_TIMEOUT_SECONDS) as broker:
        broker.ensure_connection(max_retries=1)


async def readyz(request):
    """Readiness: the database, the channel layer and the Celery broker answer.

    503 with the failing checks named (never their error text) when any does not.
    """
    checks = {
        "database": sync_to_async(_check_database, thread_sensitive=False)(),
        "channel_layer": _check_channel_layer(),
        "broker": sync_to_async(_check_broker, thread_sensitive=False)(),
    }
    results = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
            results[name] = "ok"
        except Exception as exc:
            log.warning("readiness check %s failed: %s", name, type(exc).__name__)
            results[name] = "unavailable"
    ready = all(value == "ok" for value in results.values())
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": results}, status=200 if ready else 503)
