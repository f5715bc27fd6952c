"""The gateway process's background services, started and stopped in one place.

A gateway process runs a few tasks beside its connections, on its one event loop:

- the usage recorder's writer (billing/recorder.py): usage records, off the token path;
- the budget lease keeper (billing/ledger.py): extends this process's leases and
  reaps those of lost processes;
- the configuration poller (gateway/freshness.py): keeps the caches valid while
  nothing changes and closes the sockets of keys found unusable;
- the failed-login summary writer (gateway/auth_throttle.py);
- the listener for control messages (gateway/revocation.py: revocations and
  suspensions broadcast to the connections of every process), whose receive loop
  starts with the first authenticated connection;
- with Redis, deployment health sharing (gateway/health.py) and the refresher of
  this process's connection entries (gateway/key_connections.py).

`runtime.start()` starts them on the running loop when the server starts
(openclaw_site/server.py), before the first client connects; it is idempotent.
`runtime.stop()` stops them, last in the shutdown drain (gateway/lifecycle.py),
once the connections are closed and the usage recorder has written (or set aside)
every record. Each of these objects belongs to the loop that made them
(infra.loopbound.PerLoop): tests, which run one loop after another, start the
runtime again on each, and `reset()` forgets everything the process remembers.
"""
from __future__ import annotations

import asyncio
import logging

from django.conf import settings

log = logging.getLogger(__name__)


class GatewayRuntime:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it was started on
        self._services: list[tuple[str, object]] = []  # (name, service), in the order started

    @property
    def running(self) -> bool:
        """Whether the services run on the running event loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        return self._loop is loop

    def services(self) -> list[str]:
        """The names of the services started, in the order they started."""
        return [name for name, _ in self._services] if self.running else []

    async def start(self) -> None:
        """Start every background service on the running loop (once per loop)."""
        if self.running:
            return
        from billing.ledger import keeper
        from billing.recorder import usage_recorder
        from gateway.auth_throttle import flusher
        from gateway.freshness import freshness
        from gateway.key_connections import presence
        from gateway.revocation import control_listener

        # A runtime started on another loop (a test's, now closed) is left behind:
        # its objects are bound to that loop and are made afresh for this one.
        self._loop = asyncio.get_running_loop()
        services: list[tuple[str, object]] = [
            ("usage recorder", usage_recorder),
            ("budget lease keeper", keeper()),
            ("configuration poller", freshness()),
            ("failed-login summaries", flusher()),
            ("control messages", control_listener()),
        ]
        if settings.REDIS_URL:
            services += [("health sharing", _HealthSharing()), ("connection presence", presence())]
        for _name, service in services:
            service.start()
        self._services = services
        log.info("gateway runtime started: %s", ", ".join(name for name, _ in services))

    async def stop(self) -> None:
        """Stop every service started on the running loop, in the order they started:
        the usage recorder first, writing what it still holds (or setting it aside)
        while the lease keeper still extends the leases those records settle."""
        if not self.running:
            return
        services, self._services = self._services, []
        failed = []
        for name, service in services:
            try:
                await service.stop()
            except Exception:
                log.exception("gateway runtime: %s did not stop cleanly", name)
                failed.append(name)
        self._loop = None
        log.info("gateway runtime stopped: %s%s", ", ".join(name for name, _ in services),
                 f" ({', '.join(failed)} with errors)" if failed else "")

    def reset(self) -> None:
        """For tests and for a fresh process: forget every per-process cache and
        singleton state (cached policies, budgets, resolutions and key re-checks,
        deployment health, failed-login bursts and throttle counters held in memory,
        known keys) and every loop-bound service, so the next start makes new ones.

        Not while the runtime runs on a live loop: stop it first. Shared state (Redis
        counters, the database) is left alone."""
        if self._loop is not None and not self._loop.is_closed():
            raise RuntimeError("stop the gateway runtime before resetting it")
        from billing import ledger
        from billing.recorder import usage_recorder
        from gateway import auth, auth_throttle, budgeting, freshness, health, key_connections, policies, ratelimits
        from gateway import revocation, routing
        from tenants.auth_audit import failure_audit

        self._loop, self._services = None, []
        for module in (policies, budgeting, routing, auth, health, auth_throttle, freshness, key_connections,
                       ratelimits, ledger, revocation):
            module.reset()
        usage_recorder.reset()
        failure_audit.clear()


class _HealthSharing:
    """Deployment health sharing as a service (gateway/health.py keeps it module-level)."""

    def start(self) -> None:
        from gateway.health import start_sharing

        start_sharing()

    async def stop(self) -> None:
        from gateway.health import stop_sharing

        await stop_sharing()


runtime = GatewayRuntime()
