"""What the gateway has observed about each deployment: breaker, latency, load.

Per deployment, in this process: a circuit breaker (opens after
FAILURE_THRESHOLD failures within FAILURE_WINDOW_SECONDS, or for the upstream's
Retry-After on a 429; after the cooldown one half-open probe is let through and
its first token closes the breaker, its failure re-opens it), an exponentially
decayed average of time to first token, and the number of requests in flight.
Only failures that are the deployment's fault are recorded (docs/routing.md):
a stream that ends normally clears the count, one cut off midway adds to it. With Redis, breaker
changes and latency samples are shared with every gateway process (below);
in-flight counts stay per process.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

from infra.loopbound import Background, PerLoop, spawn

log = logging.getLogger(__name__)

FAILURE_THRESHOLD = 3
FAILURE_WINDOW_SECONDS = 30.0
COOLDOWN_SECONDS = 15.0
LATENCY_ALPHA = 0.3  # weight of the newest time-to-first-token sample


@dataclass
class DeploymentHealth:
    failures: deque = field(default_factory=deque)
    open_until: float = 0.0
    probing: bool = False
    probe_attempt: str | None = None  # the attempt that is the half-open probe
    ttft_ms: float | None = None
    in_flight: int = 0
    # (time, tokens) of recent requests, for per-minute caps.
    recent: deque = field(default_factory=deque)
    # Counts across every gateway process (in flight, requests and tokens in the
    # last minute), read from Redis just before routing; None without Redis.
    shared: tuple[int, int, int] | None = None


class HealthRegistry:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._by_deployment: dict[int, DeploymentHealth] = {}
        self.sharing: "HealthSharing | None" = None

    def _share(self, event: dict) -> None:
        if self.sharing is not None:
            try:
                self.sharing.publish({**event, "origin": _ORIGIN})
            except RuntimeError:
                pass  # no running loop (sync caller): local state only

    def open_breaker(self, deployment_id: int, *, for_seconds: float) -> None:
        health = self._get(deployment_id)
        health.open_until = max(health.open_until, self._clock() + for_seconds)

    def close_breaker(self, deployment_id: int) -> None:
        health = self._get(deployment_id)
        health.failures.clear()
        health.open_until, health.probing = 0.0, False

    def observe_ttft(self, deployment_id: int, ttft_ms: float) -> None:
        health = self._get(deployment_id)
        health.ttft_ms = ttft_ms if health.ttft_ms is None else (
            LATENCY_ALPHA * ttft_ms + (1 - LATENCY_ALPHA) * health.ttft_ms)

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

    def has_capacity(self, target) -> bool:
        """Below the deployment's requests/tokens per minute and concurrency caps
        (across all processes when Redis shares the counts, else in this one)."""
        if not (target.rpm_limit or target.tpm_limit or target.max_concurrency):
            return True
        health = self._by_deployment.get(target.deployment_id)
        if health is None:
            return True
        if health.shared is not None:
            in_flight, requests, tokens = health.shared
        else:
            cutoff = self._clock() - 60
            while health.recent and health.recent[0][0] < cutoff:
                health.recent.popleft()
            in_flight, requests, tokens = health.in_flight, len(health.recent), sum(t for _, t in health.recent)
        if target.max_concurrency and in_flight >= target.max_concurrency:
            return False
        if target.rpm_limit and requests >= target.rpm_limit:
            return False
        if target.tpm_limit and tokens >= target.tpm_limit:
            return False
        return True

    def set_shared_counts(self, deployment_id: int, counts: tuple[int, int, int]) -> None:
        self._get(deployment_id).shared = counts

    def record_tokens(self, deployment_id: int, tokens: int) -> None:
        """Count a finished request's tokens toward the per-minute token cap."""
        health = self._get(deployment_id)
        if health.recent:
            at, counted = health.recent[-1]
            health.recent[-1] = (at, counted + tokens)
        if self.sharing is not None:
            self.sharing.count_tokens(deployment_id, tokens)

    def begin_attempt(self, deployment_id: int) -> str:
        """Count an attempt in flight; returns its id (for end_attempt)."""
        health = self._get(deployment_id)
        health.in_flight += 1
        health.recent.append((self._clock(), 0))
        attempt_id = uuid.uuid4().hex
        if self.sharing is not None:
            self.sharing.count_attempt(deployment_id, attempt_id, begin=True)
        if health.open_until and self._clock() >= health.open_until and not health.probing:
            health.probing, health.probe_attempt = True, attempt_id  # half-open: this request is the probe
        return attempt_id

    def end_attempt(self, deployment_id: int, attempt_id: str | None = None) -> None:
        health = self._get(deployment_id)
        health.in_flight = max(0, health.in_flight - 1)
        if self.sharing is not None and attempt_id:
            self.sharing.count_attempt(deployment_id, attempt_id, begin=False)

    def record_success(self, deployment_id: int, ttft_ms: float | None = None) -> None:
        """A stream that ended normally: the failure count starts again (and the
        time to first token is sampled, when given)."""
        health = self._get(deployment_id)
        was_open = health.open_until != 0.0
        self.close_breaker(deployment_id)
        if ttft_ms is not None:
            self._sample_ttft(deployment_id, ttft_ms)
        if was_open:
            self._share({"kind": "closed", "deployment": deployment_id})

    def record_first_token(self, deployment_id: int, ttft_ms: float) -> None:
        """A first token arrived: a latency sample, and a half-open probe has passed
        (the breaker closes). The failure count is left to how the stream ends, so
        streams that keep breaking off after their first token still add up."""
        health = self._get(deployment_id)
        self._sample_ttft(deployment_id, ttft_ms)
        if health.open_until != 0.0:
            self.close_breaker(deployment_id)
            self._share({"kind": "closed", "deployment": deployment_id})

    def release_probe(self, deployment_id: int, attempt_id: str | None) -> None:
        """An attempt that says nothing about the deployment (it failed before being
        sent, the provider refused its content, it was cancelled) ends: if it was the
        half-open probe, the next request probes instead."""
        health = self._by_deployment.get(deployment_id)
        if health is not None and health.probing and attempt_id == health.probe_attempt:
            health.probing, health.probe_attempt = False, None

    def _sample_ttft(self, deployment_id: int, ttft_ms: float) -> None:
        self.observe_ttft(deployment_id, ttft_ms)
        self._share({"kind": "ttft", "deployment": deployment_id, "ms": round(ttft_ms, 1)})

    def record_failure(self, deployment_id: int, *, retry_after_ms: int | None = None) -> None:
        health = self._get(deployment_id)
        now = self._clock()
        health.failures.append(now)
        while health.failures and health.failures[0] < now - FAILURE_WINDOW_SECONDS:
            health.failures.popleft()
        open_for = 0.0
        if retry_after_ms:
            open_for = retry_after_ms / 1000
        if health.probing or len(health.failures) >= FAILURE_THRESHOLD:
            open_for = max(open_for, COOLDOWN_SECONDS)
        health.probing = False
        if open_for:
            self.open_breaker(deployment_id, for_seconds=open_for)
            self._share({"kind": "open", "deployment": deployment_id, "for_ms": int(open_for * 1000)})

    def ttft_ms(self, deployment_id: int) -> float | None:
        health = self._by_deployment.get(deployment_id)
        return health.ttft_ms if health else None

    def in_flight(self, deployment_id: int) -> int:
        health = self._by_deployment.get(deployment_id)
        if health is None:
            return 0
        return health.shared[0] if health.shared is not None else health.in_flight

    def clear(self) -> None:
        self._by_deployment.clear()


health = HealthRegistry()


def start_sharing() -> None:
    """Share this process's deployment health through Redis, if configured (idempotent)."""
    from django.conf import settings

    if not settings.REDIS_URL:
        return
    health.sharing = _sharing.get()
    health.sharing.start()


async def stop_sharing() -> None:
    """Stop hearing other processes' health and publishing ours (the local registry stays)."""
    sharing = _sharing.existing()
    if health.sharing is sharing:
        health.sharing = None
    if sharing is not None:
        await sharing.stop()


def reset() -> None:
    """Forget every deployment's health and the sharing (gateway.runtime.reset)."""
    health.clear()
    health.sharing = None
    _sharing.forget()


# --- Sharing across processes ---------------------------------------------------------
#
# With Redis, a process that opens a breaker (or measures a time to first token)
# publishes it; every gateway process applies what it hears to its own registry,
# so a deployment failing in one process is skipped by all of them. Publishing is
# fire-and-forget from the request path (never the token path); a process that
# starts later picks up open breakers from their keys.

CHANNEL = "openclaw:health"
IN_FLIGHT_TTL_SECONDS = 900.0  # longer than any deployment's total timeout should be


class HealthSharing:
    def __init__(self, url: str, registry: HealthRegistry) -> None:
        from django.db import connection

        from infra.redis_client import shared_redis_client

        self._redis = shared_redis_client(url)
        self._registry = registry
        # Keys name deployments by their row id, so they are namespaced by the
        # database: processes sharing one database share health, and two
        # databases on one Redis (tests, staging) never mix.
        self.prefix = f"{CHANNEL}:{connection.settings_dict['NAME']}"
        self._listener = Background("health-sharing", self._listen)

    def start(self) -> None:
        self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    def publish(self, event: dict) -> None:
        spawn(self._publish(event))

    async def _publish(self, event: dict) -> None:
        try:
            payload = json.dumps(event)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.publish(self.prefix, payload)
                if event["kind"] == "open":
                    pipe.set(f"{self.prefix}:open:{event['deployment']}", payload,
                             px=max(1, int(event["for_ms"])))
                await pipe.execute()
        except Exception:
            log.warning("could not share deployment health", exc_info=True)

    async def _listen(self) -> None:
        while True:
            try:
                async for key in self._redis.scan_iter(f"{self.prefix}:open:*"):
                    raw = await self._redis.get(key)
                    if raw:
                        self._apply(json.loads(raw))
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.prefix)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._apply(json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                # redis-py turns a cancel that lands mid-read into TimeoutError:
                # if this task is being cancelled, stop instead of reconnecting.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
                log.warning("deployment health subscription lost; reconnecting", exc_info=True)
                await asyncio.sleep(1)

    # Counters shared by every process. In flight: a sorted set of attempt ids scored
    # by when they expire (a crashed process's attempts age out); requests: a sorted
    # set of the last minute's attempts; tokens: per-minute buckets, read as the
    # current bucket plus the previous one weighted by the part of it still inside
    # the sliding minute.
    def count_attempt(self, deployment_id: int, attempt_id: str, *, begin: bool) -> None:
        spawn(self._count_attempt(deployment_id, attempt_id, begin))

    def count_tokens(self, deployment_id: int, tokens: int) -> None:
        spawn(self._count_tokens(deployment_id, tokens))

    async def _count_attempt(self, deployment_id: int, attempt_id: str, begin: bool) -> None:
        now = time.time()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                if begin:
                    pipe.zadd(f"{self.prefix}:inflight:{deployment_id}", {attempt_id: now + IN_FLIGHT_TTL_SECONDS})
                    pipe.zadd(f"{self.prefix}:requests:{deployment_id}", {attempt_id: now})
                    pipe.expire(f"{self.prefix}:requests:{deployment_id}", 120)
                    pipe.expire(f"{self.prefix}:inflight:{deployment_id}", int(IN_FLIGHT_TTL_SECONDS) * 2)
                else:
                    pipe.zrem(f"{self.prefix}:inflight:{deployment_id}", attempt_id)
                await pipe.execute()
        except Exception:
            log.warning("could not share in-flight counts", exc_info=True)

    async def _count_tokens(self, deployment_id: int, tokens: int) -> None:
        minute = int(time.time() // 60)
        key = f"{self.prefix}:tokens:{deployment_id}:{minute}"
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, tokens)
                pipe.expire(key, 180)
                await pipe.execute()
        except Exception:
            log.warning("could not share token counts", exc_info=True)

    async def refresh_counts(self, deployment_ids: list[int]) -> None:
        """Read every process's counts for these deployments into the registry."""
        now = time.time()
        minute, into = divmod(now, 60)
        async with self._redis.pipeline(transaction=False) as pipe:
            for deployment_id in deployment_ids:
                pipe.zremrangebyscore(f"{self.prefix}:inflight:{deployment_id}", "-inf", now)
                pipe.zcard(f"{self.prefix}:inflight:{deployment_id}")
                pipe.zremrangebyscore(f"{self.prefix}:requests:{deployment_id}", "-inf", now - 60)
                pipe.zcard(f"{self.prefix}:requests:{deployment_id}")
                pipe.get(f"{self.prefix}:tokens:{deployment_id}:{int(minute)}")
                pipe.get(f"{self.prefix}:tokens:{deployment_id}:{int(minute) - 1}")
            results = await pipe.execute()
        for index, deployment_id in enumerate(deployment_ids):
            _, in_flight, _, requests, current, previous = results[index * 6:(index + 1) * 6]
            tokens = int(current or 0) + int(int(previous or 0) * (60 - into) / 60)
            self._registry.set_shared_counts(deployment_id, (int(in_flight), int(requests), tokens))

    def _apply(self, event: dict) -> None:
        if event.get("origin") == _ORIGIN:
            return  # our own event, already applied
        deployment_id = int(event["deployment"])
        if event["kind"] == "open":
            self._registry.open_breaker(deployment_id, for_seconds=event["for_ms"] / 1000)
        elif event["kind"] == "ttft":
            self._registry.observe_ttft(deployment_id, float(event["ms"]))
        elif event["kind"] == "closed":
            self._registry.close_breaker(deployment_id)


_ORIGIN = uuid.uuid4().hex  # this process


_sharing = PerLoop(lambda: HealthSharing(_redis_url(), health))


def _redis_url() -> str:
    from django.conf import settings

    return settings.REDIS_URL
