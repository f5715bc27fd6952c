"""Keeping the per-process caches fresh without database work on the request path.

Keys, routes, deployments, policies and budgets are cached in each gateway process.
A cache entry used to be trusted for one second, so a client sending a request a
little more than a second after the previous one paid for several queries (and
thread hops) before its request went upstream.

Now one background task per process (started with the process by the gateway's
runtime, gateway/runtime.py) does two cheap things every `POLL_SECONDS`:

- reads `ConfigVersion` (one row, bumped by database triggers on every write to a
  table the gateway caches — keys, orgs, deployments, credentials, routes, policies,
  budgets, rate cards — whatever makes the write, raw SQL included; gateway/triggers.py,
  installed by migration gateway 0008): cache entries loaded under the current version stay valid, up to
  `MAX_AGE_SECONDS`; a new version invalidates them all;
- re-checks every API key with an open connection in this process in one query
  (revoked, expired, org suspended), so `gateway.auth.recheck_principal` answers
  from memory — and closes the connections of a key found unusable, so a key
  revoked or an org suspended by anything (a management command, a raw UPDATE,
  another process with only the in-memory channel layer) stops streaming and is
  disconnected within about half a second. The channel-layer control message
  does the same sooner when the change goes through the services.

If the task falls behind (its last read is more than `TRUST_SECONDS` old), the
caches fall back to their one-second expiry and the synchronous re-check.
"""
from __future__ import annotations

import asyncio
import logging
import time

from django.db import connection
from django.utils import timezone

from infra.loopbound import Background, PerLoop, spawn
from infra.threads import FRESHNESS

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
TRUST_SECONDS = 1.0  # older reads are not trusted: the caches fall back to their own expiry
FALLBACK_SECONDS = 1.0  # an entry's life when no trusted version says whether it changed
MAX_AGE_SECONDS = 60.0

class Freshness:
    def __init__(self) -> None:
        self.version: int | None = None
        self.version_read_at = 0.0
        self.key_problems: dict[int, str] = {}
        self.keys_read_at = 0.0
        self.open_keys: dict[int, int] = {}  # key id -> open connections in this process
        self._poller = Background("freshness", self._run)

    def start(self) -> None:
        """Start polling (idempotent)."""
        self._poller.start()

    async def stop(self) -> None:
        """Stop polling: the caches fall back to their one-second expiry."""
        await self._poller.stop()

    def key_opened(self, key_id: int) -> None:
        self.open_keys[key_id] = self.open_keys.get(key_id, 0) + 1

    def key_closed(self, key_id: int) -> None:
        left = self.open_keys.get(key_id, 0) - 1
        if left > 0:
            self.open_keys[key_id] = left
        else:
            self.open_keys.pop(key_id, None)
            self.key_problems.pop(key_id, None)

    def current_version(self) -> int | None:
        """The config version, if read recently enough to be trusted."""
        if self.version is not None and time.monotonic() - self.version_read_at < TRUST_SECONDS:
            return self.version
        return None

    def key_problem(self, key_id: int) -> str | None:
        """Why the key may no longer be used ("" if it may), from the last batch re-check;
        None if that is not recent enough or did not cover this key."""
        if time.monotonic() - self.keys_read_at >= TRUST_SECONDS:
            return None
        return self.key_problems.get(key_id)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                started = time.monotonic()
                keys = list(self.open_keys)
                version, problems = await loop.run_in_executor(FRESHNESS, _read, keys)
                self.version, self.version_read_at = version, started
                self.key_problems = problems
                self.keys_read_at = started
                self._close_unusable(problems)
            except Exception:
                log.warning("could not read the configuration version; caches fall back to 1 s", exc_info=True)
            await asyncio.sleep(POLL_SECONDS)


    @staticmethod
    def _close_unusable(problems: dict[int, str]) -> None:
        from gateway.connections import connections_of_key

        for key_id, problem in problems.items():
            if problem:
                for consumer in connections_of_key(key_id):
                    spawn(consumer.revoke_access(problem))


def _read(key_ids: list[int]) -> tuple[int, dict[int, str]]:
    from gateway.models import ConfigVersion
    from tenants.access import _access_problem
    from tenants.models import ApiKey

    # This thread keeps its one connection between reads, whatever CONN_MAX_AGE says:
    # with SQLite (no persistent connections by default) opening one per read took up
    # to 0.7 s while the event loop was CPU-bound, and the version went untrusted.
    try:
        version = ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0
        problems = {key_id: "key deleted" for key_id in key_ids}
        if key_ids:
            now = timezone.now()
            for row in ApiKey.objects.filter(pk__in=key_ids).values("pk", "revoked_at", "expires_at", "org__status"):
                problems[row["pk"]] = _access_problem(revoked_at=row["revoked_at"], expires_at=row["expires_at"],
                                                      org_status=row["org__status"], now=now)
    except Exception:
        connection.close()  # a broken connection is replaced on the next read
        raise
    return version, problems


_freshness = PerLoop(Freshness)


def freshness() -> Freshness:
    return _freshness.get()


def current() -> Freshness | None:
    """The running loop's poller if one was made, without making one."""
    return _freshness.existing()


def reset() -> None:
    """Forget the poller and what it knew (gateway.runtime.reset)."""
    _freshness.forget()


def cache_valid(loaded_at: float, version: int | None) -> bool:
    """Whether a cache entry loaded at `loaded_at` (monotonic) under `version` may be used.

    While the poller's version is trusted, the version alone decides (up to
    `MAX_AGE_SECONDS`): a change is seen at the next poll, even by an entry loaded a
    moment ago. Without a trusted version (no poller, or it fell behind) an entry is
    used for `FALLBACK_SECONDS` after it was loaded."""
    age = time.monotonic() - loaded_at
    current = _freshness.existing()
    trusted = current.current_version() if current is not None else None
    if trusted is not None and version is not None:
        return trusted == version and age < MAX_AGE_SECONDS
    return age < FALLBACK_SECONDS


def version_for_loading() -> int | None:
    """The version to stamp on an entry about to be loaded: read *before* loading, so
    a change committed meanwhile makes the entry stale rather than trusted."""
    current = _freshness.existing()
    return current.current_version() if current is not None else None


_MISSING = object()


class FreshCache:
    """A per-process cache whose entries stay valid while the configuration version
    is unchanged (see the module's docstring), else for one second."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._entries: dict = {}
        self._max_entries = max_entries
        # Loads in progress: requests missing the same key at once share one load
        # (after a configuration change, 50 requests made 100 queries otherwise,
        # queued on one database thread).
        self._loading: dict = {}

    def clear(self) -> None:
        self._entries.clear()

    async def get_or_load(self, key, load):
        """The cached value for `key`, or `await load()` (stored) when it is missing or stale."""
        entry = self._entries.get(key, _MISSING)
        if entry is not _MISSING and cache_valid(entry[0], entry[1]):
            return entry[2]
        loop = asyncio.get_running_loop()
        pending = self._loading.get(key)
        if pending is None or pending.get_loop() is not loop or pending.done():
            pending = loop.create_task(self._load(key, load))
            self._loading[key] = pending
        # Shielded: a request cancelled while waiting does not cancel the others' load.
        return await asyncio.shield(pending)

    async def _load(self, key, load):
        version, loaded_at = version_for_loading(), time.monotonic()
        try:
            value = await load()
        finally:
            if self._loading.get(key) is asyncio.current_task():
                del self._loading[key]
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (loaded_at, version, value)
        return value
