"""What the gateway has observed about each deployment: breaker, latency, load.

Per deployment, in this process: a circuit breaker (opens after
FAILURE_THRESHOLD failures within FAILURE_WINDOW_SECONDS, or for the upstream's
Retry-After on a 429; after the cooldown one half-open probe is let through and
its result closes or re-opens the breaker), an exponentially decayed average of
time to first token, and the number of requests in flight.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

FAILURE_THRESHOLD = 3
FAILURE_WINDOW_SECONDS = 30.0
COOLDOWN_SECONDS = 15.0
LATENCY_ALPHA = 0.3  # weight of the newest time-to-first-token sample


@dataclass
class DeploymentHealth:
    failures: deque = field(default_factory=deque)
    open_until: float = 0.0
    probing: bool = False
    ttft_ms: float | None = None
    in_flight: int = 0


class HealthRegistry:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._by_deployment: dict[int, DeploymentHealth] = {}

    def _get(self, deployment_id: int) -> DeploymentHealth:
        health = self._by_deployment.get(deployment_id)
        if health is None:
            health = self._by_deployment[deployment_id] = DeploymentHealth()
        return health

    def is_available(self, deployment_id: int) -> bool:
        """Closed breaker, or open past its cooldown with no probe out yet."""
        health = self._by_deployment.get(deployment_id)
        if health is None or health.open_until == 0.0:
            return True
        return self._clock() >= health.open_until and not health.probing

    def begin_attempt(self, deployment_id: int) -> None:
        health = self._get(deployment_id)
        health.in_flight += 1
        if health.open_until and self._clock() >= health.open_until:
            health.probing = True  # half-open: this request is the probe

    def end_attempt(self, deployment_id: int) -> None:
        health = self._get(deployment_id)
        health.in_flight = max(0, health.in_flight - 1)

    def record_success(self, deployment_id: int, ttft_ms: float) -> None:
        health = self._get(deployment_id)
        health.failures.clear()
        health.open_until, health.probing = 0.0, False
        health.ttft_ms = ttft_ms if health.ttft_ms is None else (
            LATENCY_ALPHA * ttft_ms + (1 - LATENCY_ALPHA) * health.ttft_ms)

    def record_failure(self, deployment_id: int, *, retry_after_ms: int | None = None) -> None:
        health = self._get(deployment_id)
        now = self._clock()
        health.failures.append(now)
        while health.failures and health.failures[0] < now - FAILURE_WINDOW_SECONDS:
            health.failures.popleft()
        if retry_after_ms:
            health.open_until = max(health.open_until, now + retry_after_ms / 1000)
        if health.probing or len(health.failures) >= FAILURE_THRESHOLD:
            health.open_until = max(health.open_until, now + COOLDOWN_SECONDS)
        health.probing = False

    def ttft_ms(self, deployment_id: int) -> float | None:
        health = self._by_deployment.get(deployment_id)
        return health.ttft_ms if health else None

    def in_flight(self, deployment_id: int) -> int:
        health = self._by_deployment.get(deployment_id)
        return health.in_flight if health else 0

    def clear(self) -> None:
        self._by_deployment.clear()


health = HealthRegistry()
