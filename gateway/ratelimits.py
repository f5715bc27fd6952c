"""Requests and tokens per minute: per API key, per end user, per deployment (a
deployment named directly), and the throttle of a budget past its soft threshold.

Fixed one-minute windows (UTC minutes), counted atomically across every gateway
process: one Lua script over all of a request's limits with Redis, row locks
(immediate transactions on SQLite) in the database otherwise. A request is
admitted when each limit still has a request left in the current minute and, for
token limits, the minute's tokens are still under the limit; its prompt tokens
are counted at admission and its completion tokens when it ends. A refused
request is told exactly when the minute ends (`retry_after_ms`).
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q

from gateway.models import RateCounter
from gateway.protocol import ErrorCode, GatewayError
from infra.loopbound import PerLoop, spawn

log = logging.getLogger(__name__)

WINDOW_MS = 60_000


@dataclass(frozen=True)
class Limit:
    scope: str  # the counter's name, e.g. "key:42"
    label: str  # for the client: "this API key", "end user 'u1'", ...
    rpm: int | None = None
    tpm: int | None = None


def subject_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


class RateLimited(GatewayError):
    def __init__(self, limit: Limit, what: str, retry_after_ms: int, request_id: str | None = None) -> None:
        amount = f"{limit.rpm} requests" if what == "rpm" else f"{limit.tpm} tokens"
        super().__init__(ErrorCode.RATE_LIMITED, f"rate limit of {limit.label} reached: {amount} per minute; "
                         f"retry in {retry_after_ms / 1000:.1f}s", request_id=request_id, retryable=True,
                         retry_after_ms=retry_after_ms)
        self.limit, self.what = limit, what


def _window(now_ms: int) -> tuple[int, int]:
    """(minute number, milliseconds until the minute ends)."""
    minute = now_ms // WINDOW_MS
    return minute, (minute + 1) * WINDOW_MS - now_ms


class DatabaseLimiter:
    async def admit(self, limits: list[Limit], tokens: int, now_ms: int | None = None) -> None:
        from infra.threads import run_in_db_thread

        refused = await run_in_db_thread(self._admit, limits, tokens, now_ms or int(time.time() * 1000))
        if refused is not None:
            raise refused

    def _admit(self, limits: list[Limit], tokens: int, now_ms: int) -> RateLimited | None:
        minute, left_ms = _window(now_ms)
        with transaction.atomic():
            RateCounter.objects.bulk_create([RateCounter(scope=lim.scope, minute=minute) for lim in limits],
                                            ignore_conflicts=True)
            wanted = Q()
            for lim in limits:
                wanted |= Q(scope=lim.scope, minute=minute)
            rows = {r.scope: r for r in RateCounter.objects.select_for_update().filter(wanted).order_by("pk")}
            for lim in limits:
                row = rows[lim.scope]
                if lim.rpm is not None and row.requests + 1 > lim.rpm:
                    return RateLimited(lim, "rpm", left_ms)
                if lim.tpm is not None and row.tokens >= lim.tpm:
                    return RateLimited(lim, "tpm", left_ms)
            RateCounter.objects.filter(pk__in=[r.pk for r in rows.values()]).update(
                requests=F("requests") + 1, tokens=F("tokens") + tokens)
        return None

    async def add_tokens(self, scopes: list[str], tokens: int) -> None:
        from infra.threads import run_in_db_thread

        await run_in_db_thread(self._add_tokens, scopes, tokens, int(time.time() * 1000) // WINDOW_MS)

    @staticmethod
    def _add_tokens(scopes: list[str], tokens: int, minute: int) -> None:
        with transaction.atomic():
            RateCounter.objects.bulk_create([RateCounter(scope=s, minute=minute) for s in scopes],
                                            ignore_conflicts=True)
            RateCounter.objects.filter(scope__in=scopes, minute=minute).update(tokens=F("tokens") + tokens)
            # Old minutes are useless: drop them now and then.
            if minute % 10 == 0:
                RateCounter.objects.filter(minute__lt=minute - 2).delete()


# KEYS: the limits' counters for this minute. ARGV: 1 expire-at ms, 2 tokens, then
# per key: rpm (-1: none), tpm (-1: none). Returns 0, or {index, "rpm"|"tpm"}.
_ADMIT = """
for i = 1, #KEYS do
  local c = redis.call('HMGET', KEYS[i], 'r', 't')
  local r, t = tonumber(c[1] or '0'), tonumber(c[2] or '0')
  local rpm, tpm = tonumber(ARGV[1 + i * 2]), tonumber(ARGV[2 + i * 2])
  if rpm >= 0 and r + 1 > rpm then return {i, 'rpm'} end
  if tpm >= 0 and t >= tpm then return {i, 'tpm'} end
end
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'r', 1)
  redis.call('HINCRBY', KEYS[i], 't', ARGV[2])
  redis.call('PEXPIREAT', KEYS[i], ARGV[1])
end
return 0
"""


class RedisLimiter:
    def __init__(self, url: str) -> None:
        from infra.redis_client import shared_redis_client

        self._redis = shared_redis_client(url)
        self.prefix = f"openclaw:rate:{connection.settings_dict['NAME']}"
        self._admit = self._redis.register_script(_ADMIT)

    def _key(self, scope: str, minute: int) -> str:
        return f"{self.prefix}:{scope}:{minute}"

    async def admit(self, limits: list[Limit], tokens: int, now_ms: int | None = None) -> None:
        now_ms = now_ms or int(time.time() * 1000)
        minute, left_ms = _window(now_ms)
        args: list = [(minute + 2) * WINDOW_MS, tokens]
        for lim in limits:
            args += [-1 if lim.rpm is None else lim.rpm, -1 if lim.tpm is None else lim.tpm]
        result = await self._admit(keys=[self._key(lim.scope, minute) for lim in limits], args=args)
        if result != 0:
            index, what = int(result[0]), result[1].decode() if isinstance(result[1], bytes) else result[1]
            raise RateLimited(limits[index - 1], what, left_ms)

    async def add_tokens(self, scopes: list[str], tokens: int) -> None:
        minute = int(time.time() * 1000) // WINDOW_MS
        async with self._redis.pipeline(transaction=False) as pipe:
            for scope in scopes:
                pipe.hincrby(self._key(scope, minute), "t", tokens)
                pipe.pexpireat(self._key(scope, minute), (minute + 2) * WINDOW_MS)
            await pipe.execute()


_limiter = PerLoop(lambda: RedisLimiter(settings.REDIS_URL) if settings.REDIS_URL else DatabaseLimiter())


def limiter() -> DatabaseLimiter | RedisLimiter:
    return _limiter.get()


def reset() -> None:
    """Forget the limiter (gateway.runtime.reset)."""
    _limiter.forget()


def count_completion(scopes: list[str], tokens: int) -> None:
    """Add a finished request's completion tokens to its token limits (not awaited:
    it runs after the request's last frame)."""
    if not scopes or tokens <= 0:
        return
    books = limiter()

    async def add() -> None:
        try:
            await books.add_tokens(scopes, tokens)
        except Exception:
            log.warning("could not count completion tokens against rate limits", exc_info=True)

    spawn(add())


def request_limits(principal, end_user: str, decision) -> list[Limit]:
    """The rate limits one request counts against: its key's, its end user's (the
    org's per-user limits) and, for a deployment named directly, the deployment's
    (routes skip a deployment at its cap instead: docs/routing.md)."""
    limits = []
    if principal.key_rpm_limit or principal.key_tpm_limit:
        limits.append(Limit(scope=f"key:{principal.key_id}", label="this API key",
                            rpm=principal.key_rpm_limit, tpm=principal.key_tpm_limit))
    if end_user and (principal.end_user_rpm_limit or principal.end_user_tpm_limit):
        limits.append(Limit(scope=f"user:{principal.org_id}:{subject_hash(end_user)}", label=f"end user {end_user!r}",
                            rpm=principal.end_user_rpm_limit, tpm=principal.end_user_tpm_limit))
    if decision.strategy == "direct":
        target = decision.target
        if target.rpm_limit or target.tpm_limit:
            limits.append(Limit(scope=f"deployment:{target.deployment_id}", label=f"deployment {target.name!r}",
                                rpm=target.rpm_limit, tpm=target.tpm_limit))
    return limits
