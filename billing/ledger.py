"""Budget ledgers: reserve a request's worst case, settle it to the real cost.

Two implementations of one contract, chosen by configuration:

- `DatabaseLedger` (no Redis): counters and leases are rows; a reservation locks
  the counters it touches (`select_for_update` on PostgreSQL, an immediate
  transaction on SQLite) and settlement happens in the same transaction as the
  request's usage record, so the two cannot disagree.
- `RedisLedger` (`REDIS_URL` set): counters and leases live in Redis, changed
  only by Lua scripts (one atomic check-and-reserve across every budget of a
  request). Redis is a cache of the database: a missing counter is rebuilt
  from usage records before anything is admitted against it, and a lease is
  settled in Redis only after the request's usage record is in the database,
  so a request is always counted in one place or the other (for an instant in
  both: never in neither).

Both: a reservation is a lease keyed by the request's id. The process serving
it extends the lease every `BUDGET_LEASE_EXTEND_SECONDS` with a checkpoint of
the tokens received; a lease not extended for `BUDGET_LEASE_SECONDS` (its
process died) is claimed by any gateway process, its request is written to
usage as `gateway_lost` from the checkpoint, and the lease is settled.
Settlement is idempotent on the request id.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from billing import deadletter
from billing.budgets import BudgetRefusal, CounterRef, CounterState, Lease, first_refusal
from billing.models import Budget, BudgetCounter, BudgetLease, UsageRecord
from billing.services import usage_records_write
from billing.usage import UsageDraft
from catalog.money import Prices, request_cost, usd_to_nanos
from infra.loopbound import Background, PerLoop, stop_tasks
from infra.threads import UPKEEP, run_in_db_thread

log = logging.getLogger(__name__)

def lease_seconds() -> float:
    return float(settings.GATEWAY["BUDGET_LEASE_SECONDS"])


def extend_seconds() -> float:
    return float(settings.GATEWAY["BUDGET_LEASE_EXTEND_SECONDS"])


# --- Shared by both ledgers ------------------------------------------------------------

def _usage_of(ref: CounterRef) -> Q:
    """The usage records that count against a counter."""
    rule = ref.rule
    wanted = Q(org_id=rule.org_id, started_at__gte=ref.window_start)
    if ref.window_end is not None:
        wanted &= Q(started_at__lt=ref.window_end)
    if rule.scope == Budget.Scope.KEY:
        wanted &= Q(api_key_id=rule.api_key_id)
    elif rule.scope == Budget.Scope.END_USER:
        wanted &= Q(end_user=ref.subject)
    if rule.route_id is not None:
        wanted &= Q(via_route_id=rule.route_id)
    if rule.deployment_id is not None:
        wanted &= Q(deployment_id=rule.deployment_id)
    return wanted


def spent_from_usage(ref: CounterRef) -> CounterState:
    """A counter's settled spend, summed from usage records (the database's truth)."""
    return spent_from_usage_many([ref])[0]


def spent_from_usage_many(refs: list[CounterRef]) -> list[CounterState]:
    """`spent_from_usage` of each counter, in one query (the dashboard's budget list)."""
    if not refs:
        return []
    sums = {}
    for i, ref in enumerate(refs):
        only = _usage_of(ref)
        sums |= {f"c{i}": Sum("cost_usd", filter=only), f"p{i}": Sum("prompt_tokens", filter=only),
                 f"o{i}": Sum("completion_tokens", filter=only)}
    scope = Q()
    for ref in refs:
        scope |= _usage_of(ref)
    totals = UsageRecord.objects.filter(scope).aggregate(**sums)
    return [CounterState(spent_nanos=usd_to_nanos(totals[f"c{i}"] or Decimal(0)),
                         spent_tokens=(totals[f"p{i}"] or 0) + (totals[f"o{i}"] or 0)) for i in range(len(refs))]


def lost_request_draft(request_id: uuid.UUID, org_id: int, usage: dict[str, Any], completion_tokens: int) -> UsageDraft:
    """The usage record of a request whose gateway process died: billed from its checkpoint."""
    prices = Prices(Decimal(usage["input_price_per_mtok"]), Decimal(usage["output_price_per_mtok"]))
    prompt = int(usage["prompt_tokens"])
    draft = UsageDraft(
        request_id=request_id, client_request_id=usage["client_request_id"], org_id=org_id,
        api_key_id=usage["api_key_id"], requested_model=usage["requested_model"], end_user=usage["end_user"],
        started_at=datetime.fromisoformat(usage["started_at"]), status=UsageRecord.Status.GATEWAY_LOST,
        finish_reason="error", deployment_id=usage["deployment_id"], deployment_name=usage["deployment_name"],
        provider=usage["provider"], route=usage["route"], via_route_id=usage["via_route_id"],
        prompt_tokens=prompt, completion_tokens=completion_tokens,
        prompt_tokens_source=UsageRecord.TokenSource.COUNTED,
        completion_tokens_source=UsageRecord.TokenSource.COUNTED if completion_tokens else UsageRecord.TokenSource.NONE,
        input_price_per_mtok=prices.input_per_mtok, output_price_per_mtok=prices.output_per_mtok,
        max_tokens=usage["max_tokens"],
    )
    draft.cost_usd = request_cost(prices, prompt_tokens=prompt, completion_tokens=completion_tokens)
    draft.ended_at = timezone.now()
    return draft


def write_lost_records(drafts: list[UsageDraft]) -> dict[uuid.UUID, tuple[int, int]]:
    """Write lost requests' usage records (each in a savepoint when one fails). A
    record the database refuses for good (text it cannot store, from the lease's
    checkpoint) is set aside in the dead-letter file (billing.deadletter) rather
    than failing every reaping after it: returns what each such request spent, by
    its checkpoint, so its lease is still settled."""
    try:
        with transaction.atomic():
            usage_records_write(drafts)
        return {}
    except deadletter.PERMANENT_ERRORS as exc:
        if len(drafts) == 1:
            error = deadletter.describe(exc)
        else:
            return {request_id: spent for draft in drafts
                    for request_id, spent in write_lost_records([draft]).items()}
    [draft] = drafts
    deadletter.set_aside(drafts, reason="permanent_error", error=error)
    log.error("usage record %s of a lost gateway process cannot be written: %s; set aside in %s "
              "(manage.py replay_usage)", draft.request_id, error, deadletter.path())
    return {draft.request_id: _actual(draft)}


def _actual(draft: UsageDraft) -> tuple[int, int]:
    return usd_to_nanos(draft.cost_usd), draft.prompt_tokens + draft.completion_tokens


def _set_aside_spend(draft: UsageDraft) -> tuple[int, int]:
    """What a usage record set aside unwritten (billing.recorder) counts against its
    budgets: its own cost, or the reserved worst case when that cost is itself the
    value that could not be stored (never less than nothing)."""
    try:
        nanos, tokens = _actual(draft)
    except (ValueError, TypeError, ArithmeticError):
        return draft.lease.nanos, draft.lease.tokens
    if nanos < 0 or tokens < 0:
        return draft.lease.nanos, draft.lease.tokens
    return nanos, tokens


# --- Database ledger -------------------------------------------------------------------

class DatabaseLedger:
    kind = "database"

    async def reserve(self, lease: Lease) -> None:
        """Reserve the lease's worst case on every counter, or raise the refusal
        (BudgetExhausted: settled spend leaves no room; BudgetBusy: reservations in
        flight do) and reserve nothing."""
        refusal = await run_in_db_thread(self._reserve, lease)
        if refusal is not None:
            raise refusal

    def _reserve(self, lease: Lease) -> BudgetRefusal | None:
        now = timezone.now()
        wanted = Q()
        for ref in lease.refs:
            wanted |= Q(budget_id=ref.rule.id, subject=ref.subject, window_start=ref.window_start)
        existing = set(BudgetCounter.objects.filter(wanted).values_list("budget_id", "subject", "window_start"))
        unseen = {ref.rule.id for ref in lease.refs if (ref.rule.id, ref.subject, ref.window_start) not in existing}
        if unseen:
            # A budget deleted since this process cached its rules has no row to count
            # against (its counters went with it): it no longer limits anything.
            gone = unseen - set(Budget.objects.filter(pk__in=unseen).values_list("pk", flat=True))
            if gone:
                lease.refs = [ref for ref in lease.refs if ref.rule.id not in gone]
                wanted = Q(pk__in=[])
                for ref in lease.refs:
                    wanted |= Q(budget_id=ref.rule.id, subject=ref.subject, window_start=ref.window_start)
        # A new counter starts from the usage already in its window (a budget created
        # mid-month counts the month's spend so far), as the Redis ledger's rebuild does.
        new = []
        for ref in lease.refs:
            if (ref.rule.id, ref.subject, ref.window_start) not in existing:
                spent = spent_from_usage(ref)
                new.append(BudgetCounter(budget_id=ref.rule.id, subject=ref.subject, window_start=ref.window_start,
                                         spent_nanos=spent.spent_nanos, spent_tokens=spent.spent_tokens))
        with transaction.atomic():
            if new:
                BudgetCounter.objects.bulk_create(new, ignore_conflicts=True)
            # Locked in id order, so two requests over the same counters cannot deadlock.
            locked = {(c.budget_id, c.subject, c.window_start): c
                      for c in BudgetCounter.objects.select_for_update().filter(wanted).order_by("pk")}
            counters = [locked[(ref.rule.id, ref.subject, ref.window_start)] for ref in lease.refs]
            states = [CounterState(c.spent_nanos, c.spent_tokens, c.reserved_nanos, c.reserved_tokens)
                      for c in counters]
            refusal = first_refusal(lease, states)
            if refusal is not None:
                return refusal
            BudgetCounter.objects.filter(pk__in=[c.pk for c in counters]).update(
                reserved_nanos=F("reserved_nanos") + lease.nanos, reserved_tokens=F("reserved_tokens") + lease.tokens)
            lease.ledger_ids = [c.pk for c in counters]
            lease.after = [CounterState(s.spent_nanos, s.spent_tokens, s.reserved_nanos + lease.nanos,
                                        s.reserved_tokens + lease.tokens) for s in states]
            payload = lease.payload() | {"counters": lease.ledger_ids}
            BudgetLease.objects.create(request_id=lease.request_id, org_id=lease.org_id, payload=payload,
                                       expires_at=now + timedelta(seconds=lease_seconds()))
        return None

    async def release(self, lease: Lease) -> None:
        """Give a reservation back unused (an attempt that failed before its first token)."""
        await run_in_db_thread(self._settle_one, lease.request_id, 0, 0)

    def _settle_one(self, request_id: uuid.UUID, nanos: int, tokens: int) -> bool:
        with transaction.atomic():
            return self._settle_locked({request_id: (nanos, tokens)}) == 1

    @staticmethod
    def _settle_locked(amounts: dict[uuid.UUID, tuple[int, int]]) -> int:
        """Inside a transaction: turn leases' reservations into spend (request id ->
        (nano-dollars, tokens) spent). Leases already settled are skipped
        (idempotent); returns how many were settled.

        Rows are locked leases first, then every counter involved, each in id order,
        as reservations lock counters: two settlements, or a settlement and a
        reservation, over the same counters cannot deadlock."""
        leases = list(BudgetLease.objects.select_for_update().filter(pk__in=list(amounts)).order_by("pk"))
        if not leases:
            return 0
        counter_ids = sorted({pk for lease in leases for pk in lease.payload["counters"]})
        list(BudgetCounter.objects.select_for_update().filter(pk__in=counter_ids).order_by("pk")
             .values_list("pk", flat=True))
        for lease in leases:
            nanos, tokens = amounts[lease.pk]
            held_nanos, held_tokens = lease.payload["nanos"], lease.payload["tokens"]
            BudgetCounter.objects.filter(pk__in=lease.payload["counters"]).update(
                reserved_nanos=F("reserved_nanos") - held_nanos, reserved_tokens=F("reserved_tokens") - held_tokens,
                spent_nanos=F("spent_nanos") + nanos, spent_tokens=F("spent_tokens") + tokens)
        BudgetLease.objects.filter(pk__in=[lease.pk for lease in leases]).delete()
        return len(leases)

    def write_and_settle(self, drafts: list[UsageDraft]) -> None:
        """The usage writer's step: records and their settlement in one transaction."""
        with transaction.atomic():
            usage_records_write(drafts)
            amounts = {draft.request_id: _actual(draft) for draft in drafts if draft.lease is not None}
            if amounts:
                self._settle_locked(amounts)

    async def settle_written(self, drafts: list[UsageDraft]) -> None:
        pass  # settled in write_and_settle's transaction

    async def settle_set_aside(self, drafts: list[UsageDraft]) -> None:
        """Settle the leases of records the database refused (set aside unwritten) as spend."""
        amounts = {draft.request_id: _set_aside_spend(draft) for draft in drafts if draft.lease is not None}
        if amounts:
            await run_in_db_thread(self._settle_many, amounts)

    def _settle_many(self, amounts: dict[uuid.UUID, tuple[int, int]]) -> int:
        with transaction.atomic():
            return self._settle_locked(amounts)

    async def extend(self, leases: list[Lease]) -> None:
        await run_in_db_thread(self._extend, leases, executor=UPKEEP)

    def _extend(self, leases: list[Lease]) -> None:
        expires = timezone.now() + timedelta(seconds=lease_seconds())
        with transaction.atomic():
            for lease in leases:
                BudgetLease.objects.filter(pk=lease.request_id).update(
                    expires_at=expires, completion_tokens=lease.completion_tokens)

    async def reap(self) -> int:
        return await run_in_db_thread(self._reap, executor=UPKEEP)

    def _reap(self) -> int:
        if not BudgetLease.objects.filter(expires_at__lt=timezone.now()).exists():
            return 0  # the usual case: no write transaction (SQLite has one writer at a time)
        with transaction.atomic():
            expired = list(BudgetLease.objects.select_for_update(skip_locked=True)
                           .filter(expires_at__lt=timezone.now()).order_by("pk")[:100])
            if not expired:
                return 0
            set_aside = write_lost_records([lost_request_draft(lease.request_id, lease.org_id, lease.payload["usage"],
                                                               lease.completion_tokens) for lease in expired])
            # The lost process's own record stands if it had written one.
            records = UsageRecord.objects.filter(pk__in=[lease.pk for lease in expired])
            return self._settle_locked({r.pk: (usd_to_nanos(r.cost_usd), r.prompt_tokens + r.completion_tokens)
                                        for r in records} | set_aside)

    async def snapshot(self, refs: list[CounterRef]) -> list[CounterState]:
        return await run_in_db_thread(self._snapshot, refs)

    @staticmethod
    def _snapshot(refs: list[CounterRef]) -> list[CounterState]:
        states = []
        for ref in refs:
            c = BudgetCounter.objects.filter(budget_id=ref.rule.id, subject=ref.subject,
                                             window_start=ref.window_start).first()
            states.append(CounterState(c.spent_nanos, c.spent_tokens, c.reserved_nanos, c.reserved_tokens)
                          if c else CounterState())
        return states


# --- Redis ledger ----------------------------------------------------------------------

# KEYS: 1 epoch marker, 2 lease index (zset), 3 lease, 4.. counters.
# ARGV: 1 now ms, 2 lease expiry ms, 3 grace ms, 4 payload, 5 nanos, 6 tokens, 7 request id,
#       then per counter: limit nanos (-1: none), limit tokens (-1: none).
# Returns {"ok", states...} | {"missing", i} | {"hold", ms} | {"refused", states...}
# A refusal returns the states it saw, atomically: `first_refusal` tells from them
# whether settled spend (used up) or reservations in flight (busy) stand in the way.
_RESERVE = """
local now = tonumber(ARGV[1])
local epoch = tonumber(redis.call('GET', KEYS[1]) or '-1')
if epoch < 0 then return {'missing', 0} end
local grace = tonumber(ARGV[3])
if now < epoch + grace then return {'hold', epoch + grace - now} end
local nanos, tokens = tonumber(ARGV[5]), tonumber(ARGV[6])
local states, refused = {}, false
for i = 4, #KEYS do
  local c = redis.call('HMGET', KEYS[i], 'sn', 'st', 'rn', 'rt')
  if not c[1] then return {'missing', i - 3} end
  local sn, st, rn, rt = tonumber(c[1]), tonumber(c[2]), tonumber(c[3]), tonumber(c[4])
  local ln, lt = tonumber(ARGV[8 + (i - 4) * 2]), tonumber(ARGV[9 + (i - 4) * 2])
  if (ln >= 0 and sn + rn + nanos > ln) or (lt >= 0 and st + rt + tokens > lt) then refused = true end
  table.insert(states, sn); table.insert(states, st); table.insert(states, rn); table.insert(states, rt)
end
if refused then table.insert(states, 1, 'refused'); return states end
for i = 4, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'rn', nanos)
  redis.call('HINCRBY', KEYS[i], 'rt', tokens)
end
redis.call('HSET', KEYS[3], 'p', ARGV[4], 'ck', 0)
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[7])
table.insert(states, 1, 'ok')
return states
"""

# KEYS: 1 epoch marker, 2 counter. ARGV: 1 now ms, 2 spent nanos, 3 spent tokens, 4 ttl s (0: none).
# Creates the counter if it is still missing, and the epoch marker if Redis lost it.
_REBUILD = """
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SET', KEYS[1], ARGV[1]) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'sn', ARGV[2], 'st', ARGV[3], 'rn', 0, 'rt', 0)
  if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
end
return 1
"""

# KEYS: 1 lease index, 2 lease. ARGV: 1 request id, 2 spent nanos, 3 spent tokens.
# Leaves a short-lived tombstone '<lease>:settled' (see _REASSERT). Idempotent: a lease already settled is gone, and nothing changes. A settlement is
# published on '<lease index>:settled', waking requests that wait for room in any process.
_SETTLE = """
-- The tombstone tells a lease keeper whose extension raced this settlement (it read its
-- open leases before, and its extension ran after) not to put the lease back.
redis.call('SET', KEYS[2] .. ':settled', '1', 'EX', 120)
local p = redis.call('HGET', KEYS[2], 'p')
if not p then return 0 end
local lease = cjson.decode(p)
for _, key in ipairs(lease.counters) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBY', key, 'rn', -lease.nanos)
    redis.call('HINCRBY', key, 'rt', -lease.tokens)
    redis.call('HINCRBY', key, 'sn', ARGV[2])
    redis.call('HINCRBY', key, 'st', ARGV[3])
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[1] .. ':settled', '1')
return 1
"""

# KEYS: 1 lease index. ARGV: 1 expiry ms, 2 lease-key prefix, then (request id, checkpoint) pairs.
# Returns the request ids whose lease is missing (Redis lost it: re-assert them).
_EXTEND = """
local missing = {}
for i = 3, #ARGV, 2 do
  local key = ARGV[2] .. ARGV[i]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, 'ck', ARGV[i + 1])
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  elseif redis.call('EXISTS', key .. ':settled') == 0 then  -- not merely settled since it was read
    table.insert(missing, ARGV[i])
  end
end
return missing
"""

# KEYS: 1 lease index, 2 lease, 3.. counters. ARGV: 1 request id, 2 expiry ms, 3 payload, 4 checkpoint,
# 5 nanos, 6 tokens. Puts back a lease Redis lost, with its reservation on the (rebuilt) counters.
_REASSERT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[2] .. ':settled') == 1 then return 0 end  -- settled meanwhile
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HINCRBY', KEYS[i], 'rn', ARGV[5])
    redis.call('HINCRBY', KEYS[i], 'rt', ARGV[6])
  end
end
redis.call('HSET', KEYS[2], 'p', ARGV[3], 'ck', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
"""

# KEYS: 1 lease index. ARGV: 1 now ms, 2 claim-until ms, 3 lease-key prefix, 4 max.
# Claims expired leases (pushing their expiry out so no other process claims them
# meanwhile) and returns (request id, payload, checkpoint) triples.
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local lease = redis.call('HMGET', ARGV[3] .. id, 'p', 'ck')
  if lease[1] then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, id); table.insert(out, lease[1]); table.insert(out, lease[2] or '0')
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""


class RedisLedger:
    kind = "redis"

    def __init__(self, url: str) -> None:
        from infra.redis_client import shared_redis_client

        self._redis = shared_redis_client(url)
        # Keys are namespaced by the database they cache (tests and staging may share a Redis).
        self.prefix = redis_prefix()
        self._epoch = f"{self.prefix}:epoch"
        self._leases = f"{self.prefix}:leases"
        self._reserve = self._redis.register_script(_RESERVE)
        self._rebuild = self._redis.register_script(_REBUILD)
        self._settle = self._redis.register_script(_SETTLE)
        self._extend = self._redis.register_script(_EXTEND)
        self._reassert = self._redis.register_script(_REASSERT)
        self._claim = self._redis.register_script(_CLAIM)

    def _lease_key(self, request_id) -> str:
        return f"{self.prefix}:l:{request_id}"

    @staticmethod
    def grace_ms() -> int:
        """After Redis lost its data, how long admissions wait for the living processes
        to put their leases back (they re-assert on their next extension)."""
        return int(extend_seconds() * 2500)

    def _payload(self, lease: Lease) -> str:
        return json.dumps(lease.payload() | {"counters": [ref.redis_key(self.prefix) for ref in lease.refs],
                                             "org": lease.org_id})

    async def reserve(self, lease: Lease) -> None:
        keys = [self._epoch, self._leases, self._lease_key(lease.request_id)] + [
            ref.redis_key(self.prefix) for ref in lease.refs]
        limits: list[int] = []
        for ref in lease.refs:
            limits += [-1 if ref.rule.limit_nanos is None else ref.rule.limit_nanos,
                       -1 if ref.rule.limit_tokens is None else ref.rule.limit_tokens]
        payload = self._payload(lease)
        for _ in range(20):
            now_ms = int(time.time() * 1000)
            args = [now_ms, now_ms + int(lease_seconds() * 1000), self.grace_ms(), payload, lease.nanos, lease.tokens,
                    str(lease.request_id)] + limits
            result = await self._reserve(keys=keys, args=args)
            verdict = result[0].decode() if isinstance(result[0], bytes) else result[0]
            if verdict == "missing":
                await self._rebuild_missing(lease.refs)
                continue
            if verdict == "hold":
                await asyncio.sleep(min(int(result[1]), 5000) / 1000)
                continue
            states = [CounterState(*map(int, result[i:i + 4])) for i in range(1, len(result), 4)]
            if verdict == "refused":
                raise first_refusal(lease, states)
            lease.after = [CounterState(s.spent_nanos, s.spent_tokens, s.reserved_nanos + lease.nanos,
                                        s.reserved_tokens + lease.tokens) for s in states]
            return
        raise RuntimeError("budget counters could not be prepared")

    async def _rebuild_missing(self, refs: list[CounterRef]) -> None:
        """Recreate counters Redis does not have from the usage records in the database."""
        keys = [ref.redis_key(self.prefix) for ref in refs]
        exists = await asyncio.gather(*(self._redis.exists(key) for key in keys))
        now = timezone.now()
        for ref, key, present in zip(refs, keys, exists):
            if present:
                continue
            state = await run_in_db_thread(spent_from_usage, ref)
            await self._rebuild(keys=[self._epoch, key], args=[int(time.time() * 1000), state.spent_nanos,
                                                                state.spent_tokens, ref.ttl_seconds(now)])
        if all(exists):  # only the epoch marker was missing
            await self._rebuild(keys=[self._epoch, keys[0]], args=[int(time.time() * 1000), 0, 0, 0])

    async def release(self, lease: Lease) -> None:
        await self._settle(keys=[self._leases, self._lease_key(lease.request_id)],
                           args=[str(lease.request_id), 0, 0])

    def write_and_settle(self, drafts: list[UsageDraft]) -> None:
        usage_records_write(drafts)

    async def settle_written(self, drafts: list[UsageDraft]) -> None:
        """After the usage records are in the database: settle their leases."""
        leased = [draft for draft in drafts if draft.lease is not None]
        if len(leased) == 1:  # the usual case: one round trip (a pipeline checks its scripts first)
            nanos, tokens = _actual(leased[0])
            await self._settle(keys=[self._leases, self._lease_key(leased[0].request_id)],
                               args=[str(leased[0].request_id), nanos, tokens])
            return
        if not leased:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for draft in leased:
                nanos, tokens = _actual(draft)
                await self._settle(keys=[self._leases, self._lease_key(draft.request_id)],
                                   args=[str(draft.request_id), nanos, tokens], client=pipe)
            await pipe.execute()

    async def settle_set_aside(self, drafts: list[UsageDraft]) -> None:
        """Settle the leases of records the database refused (set aside unwritten) as spend."""
        for draft in drafts:
            if draft.lease is not None:
                nanos, tokens = _set_aside_spend(draft)
                await self._settle(keys=[self._leases, self._lease_key(draft.request_id)],
                                   args=[str(draft.request_id), nanos, tokens])

    async def extend(self, leases: list[Lease]) -> None:
        args: list[Any] = [int((time.time() + lease_seconds()) * 1000), f"{self.prefix}:l:"]
        for lease in leases:
            args += [str(lease.request_id), lease.completion_tokens]
        missing = await self._extend(keys=[self._leases], args=args)
        if missing:
            by_id = {str(lease.request_id): lease for lease in leases}
            for raw in missing:
                lease = by_id[raw.decode() if isinstance(raw, bytes) else raw]
                log.warning("budget lease %s was missing from Redis; putting it back", lease.request_id)
                await self._rebuild_missing(lease.refs)
                await self._reassert(
                    keys=[self._leases, self._lease_key(lease.request_id)] + [
                        ref.redis_key(self.prefix) for ref in lease.refs],
                    args=[str(lease.request_id), int((time.time() + lease_seconds()) * 1000), self._payload(lease),
                          lease.completion_tokens, lease.nanos, lease.tokens])

    async def reap(self) -> int:
        now_ms = int(time.time() * 1000)
        claimed = await self._claim(keys=[self._leases], args=[now_ms, now_ms + 60_000, f"{self.prefix}:l:", 100])
        reaped = 0
        for i in range(0, len(claimed), 3):
            request_id = uuid.UUID(claimed[i].decode() if isinstance(claimed[i], bytes) else claimed[i])
            payload = json.loads(claimed[i + 1])
            draft = lost_request_draft(request_id, payload["org"], payload["usage"], int(claimed[i + 2]))
            nanos, tokens = await run_in_db_thread(self._write_lost, draft)
            await self._settle(keys=[self._leases, self._lease_key(request_id)], args=[str(request_id), nanos, tokens])
            reaped += 1
        return reaped

    @staticmethod
    def _write_lost(draft: UsageDraft) -> tuple[int, int]:
        """(nano-dollars, tokens) the lost request spent."""
        set_aside = write_lost_records([draft])
        if set_aside:
            return set_aside[draft.request_id]
        record = UsageRecord.objects.get(pk=draft.request_id)  # the process's own, if it wrote one
        return usd_to_nanos(record.cost_usd), record.prompt_tokens + record.completion_tokens

    async def snapshot(self, refs: list[CounterRef]) -> list[CounterState]:
        states = []
        for ref in refs:
            values = await self._redis.hmget(ref.redis_key(self.prefix), "sn", "st", "rn", "rt")
            if values[0] is None:
                states.append(await run_in_db_thread(spent_from_usage, ref))
            else:
                states.append(CounterState(*map(int, values)))
        return states

    async def watch_settlements(self, on_settled) -> None:
        """Call `on_settled()` whenever any gateway process settles a lease (the settle
        script publishes it): a request waiting for room wakes at once, not at its
        next poll. Returns when the subscription fails (the waiters keep polling)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(f"{self._leases}:settled")
            async for message in pubsub.listen():
                if message and message.get("type") == "message":
                    on_settled()
        except Exception:
            log.info("budget settlement subscription ended; waiting requests poll instead", exc_info=True)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def check_eviction_policy(self) -> None:
        """Budget counters must never be evicted: warn loudly when Redis may do it."""
        try:
            policy = (await self._redis.config_get("maxmemory-policy")).get("maxmemory-policy")
        except Exception:
            log.warning("could not read Redis maxmemory-policy; budget counters need 'noeviction'")
            return
        if policy not in (None, "noeviction"):
            log.error("Redis maxmemory-policy is %r: budget counters may be evicted and rebuilt from the database "
                      "(slower, and admissions pause while they are). Set maxmemory-policy noeviction.", policy)


# --- The running process's ledger and its lease keeper ---------------------------------

class LeaseKeeper:
    """Extends this process's open leases and reaps expired ones (any process's), and
    tells requests waiting for room in a budget when a reservation settles.

    Its upkeep runs from `start()` to `stop()` (the gateway process's runtime,
    gateway/runtime.py, calls both). The Redis subscription that hears other
    processes' settlements is opened by the first request that waits for room, and
    reopened by the next one if it dropped; `stop()` closes it too."""

    def __init__(self, ledger) -> None:
        self.ledger = ledger
        self.open: dict[uuid.UUID, Lease] = {}
        self._upkeep = Background("budget-leases", self._run)
        self._held_at: dict[uuid.UUID, float] = {}
        # How long a reservation is typically held (an average of recent ones): the
        # basis of `retry_after_ms` when reservations in flight fill a budget.
        self.typical_hold: float | None = None
        self._settled = asyncio.Event()
        self._watch: asyncio.Task | None = None
        self._turns: dict[tuple, asyncio.Lock] = {}

    def start(self) -> None:
        """Start extending and reaping leases (idempotent)."""
        self._upkeep.start()

    async def stop(self) -> None:
        """Stop the upkeep and the settlement subscription. Leases still open are no
        longer extended: they expire and are reaped (billed from their checkpoint)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            await stop_tasks([watch], timeout=10)
        await self._upkeep.stop()

    def hold(self, lease: Lease) -> None:
        self.open[lease.request_id] = lease
        self._held_at[lease.request_id] = time.monotonic()

    def drop(self, lease: Lease) -> None:
        """The lease is settled or released: stop extending it, and wake the waiters."""
        self.open.pop(lease.request_id, None)
        held_at = self._held_at.pop(lease.request_id, None)
        if held_at is not None:
            held = time.monotonic() - held_at
            self.typical_hold = held if self.typical_hold is None else 0.8 * self.typical_hold + 0.2 * held
        self.settled()

    def settled(self) -> None:
        """A reservation settled (here, or in another process): waiters re-check."""
        self._settled.set()
        self._settled = asyncio.Event()

    def waiting_turn(self, lease: Lease) -> asyncio.Lock:
        """The turn of the requests waiting on the same counters as `lease` (a fair,
        first-come lock): one of them at a time watches the counters."""
        key = tuple(sorted((ref.rule.id, ref.subject, ref.window_start.isoformat()) for ref in lease.refs))
        turn = self._turns.get(key)
        if turn is None:
            if len(self._turns) > 1000:  # forget idle ones (a lock nobody holds or waits for)
                self._turns = {k: t for k, t in self._turns.items() if t.locked()}
            turn = self._turns[key] = asyncio.Lock()
        return turn

    async def wait_for_settlement(self, timeout: float) -> None:
        """Until a reservation settles in this process (or, with Redis, in any) or
        `timeout` seconds pass: the caller re-checks either way, so settlements in
        other processes are noticed by polling at worst."""
        watch = getattr(self.ledger, "watch_settlements", None)
        if watch is not None and (self._watch is None or self._watch.done()):
            self._watch = asyncio.get_running_loop().create_task(watch(self.settled), name="budget-settlements")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)

    def settle_estimate_ms(self, lease: Lease) -> int:
        """An honest guess at when a reservation standing in this lease's way settles:
        of this process's leases on the same counters, the soonest expected to end
        (each is assumed to be held the typical time; one held longer than that is
        assumed halfway through); when other processes hold them, the typical time."""
        typical = self.typical_hold if self.typical_hold is not None else 1.0
        counters = {(ref.rule.id, ref.subject, ref.window_start) for ref in lease.refs}
        now = time.monotonic()
        expected = []
        for other in self.open.values():
            if counters.isdisjoint((ref.rule.id, ref.subject, ref.window_start) for ref in other.refs):
                continue
            left = typical - (now - self._held_at.get(other.request_id, now))
            expected.append(left if left > 0 else typical / 2)
        estimate = min(expected) if expected else typical
        return int(min(max(estimate, 0.05), lease_seconds()) * 1000)

    async def _run(self) -> None:
        if isinstance(self.ledger, RedisLedger):
            await self.ledger.check_eviction_policy()
        last_reap = 0.0
        while True:
            await asyncio.sleep(extend_seconds())
            try:
                if self.open:
                    await self.ledger.extend(list(self.open.values()))
                if time.monotonic() - last_reap >= min(5.0, lease_seconds() / 2):
                    last_reap = time.monotonic()
                    reaped = await self.ledger.reap()
                    if reaped:
                        self.settled()
                        log.warning("settled %d budget reservation(s) left by a lost gateway process", reaped)
            except Exception:
                log.warning("budget lease upkeep failed; retrying", exc_info=True)


def _make_ledger():
    return RedisLedger(settings.REDIS_URL) if settings.REDIS_URL else DatabaseLedger()


_keeper = PerLoop(lambda: LeaseKeeper(_make_ledger()))


def keeper() -> LeaseKeeper:
    return _keeper.get()


def ledger():
    return _keeper.get().ledger


def reset() -> None:
    """Forget the keeper, its ledger and the leases it held (a fresh process, tests)."""
    _keeper.forget()


# --- Reading counters for pages -------------------------------------------------------

def read_counters(refs: list[CounterRef], *, subjects_of: dict[int, list[str]] | None = None
                  ) -> dict[int, dict[str, CounterState]]:
    """The current state of budget counters, read from whichever ledger this process
    uses (the dashboard's budget pages; synchronous, no locks).

    `refs` names one counter per budget and window (its `subject` is ignored for
    per-end-user budgets): the answer maps each budget id to {subject: state}. For a
    per-end-user budget every subject with a counter in the window is returned — on
    the database ledger, every row; on Redis, whose keys hold a digest of the subject,
    the subjects named in `subjects_of[budget id]` (end users seen in usage records)
    plus, under "", the sum of counters not matched to one of them. A counter Redis
    does not hold (never touched since its data was lost) is its settled spend from
    the usage records, as the ledger itself would rebuild it."""
    if settings.REDIS_URL:
        return _read_redis_counters(refs, subjects_of or {})
    return _read_database_counters(refs)


def _read_database_counters(refs: list[CounterRef]) -> dict[int, dict[str, CounterState]]:
    found: dict[int, dict[str, CounterState]] = {ref.rule.id: {} for ref in refs}
    if not refs:
        return found
    wanted = Q()
    for ref in refs:
        wanted |= Q(budget_id=ref.rule.id, window_start=ref.window_start)
    for c in BudgetCounter.objects.filter(wanted).only(
            "budget_id", "subject", "spent_nanos", "spent_tokens", "reserved_nanos", "reserved_tokens"):
        found[c.budget_id][c.subject] = CounterState(c.spent_nanos, c.spent_tokens, c.reserved_nanos,
                                                     c.reserved_tokens)
    # No counter yet: nothing was reserved in this window since the budget existed, but
    # spend from before it was created counts (docs/budgets.md). One query for them all.
    missing = [ref for ref in refs if ref.rule.scope != Budget.Scope.END_USER and "" not in found[ref.rule.id]]
    for ref, state in zip(missing, spent_from_usage_many(missing)):
        found[ref.rule.id][""] = state
    return found


def redis_prefix() -> str:
    """The namespace of this database's budget keys in Redis (as RedisLedger uses it)."""
    return f"openclaw:budget:{connection.settings_dict['NAME']}"


def _read_redis_counters(refs: list[CounterRef], subjects_of: dict[int, list[str]]
                         ) -> dict[int, dict[str, CounterState]]:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    prefix = redis_prefix()
    found: dict[int, dict[str, CounterState]] = {}
    missing: list[CounterRef] = []
    try:
        for ref in refs:
            states: dict[str, CounterState] = {}
            if ref.rule.scope == Budget.Scope.END_USER:
                named = {CounterRef(ref.rule, subject, ref.window_start, ref.window_end).redis_key(prefix): subject
                         for subject in subjects_of.get(ref.rule.id, []) if subject}
                pattern = f"{prefix}:c:{ref.rule.id}:{int(ref.window_start.timestamp())}:*"
                keys = sorted(k.decode() for k in client.scan_iter(match=pattern, count=500))
                values = _hmget_all(client, keys)
                rest = CounterState()
                for key, state in zip(keys, values):
                    if state is None:
                        continue
                    if key in named:
                        states[named[key]] = state
                    else:
                        _add(rest, state)
                if rest != CounterState():
                    states[""] = rest
            else:
                [state] = _hmget_all(client, [ref.redis_key(prefix)])
                if state is None:
                    missing.append(ref)
                else:
                    states[""] = state
            found[ref.rule.id] = states
    finally:
        client.close()
    for ref, state in zip(missing, spent_from_usage_many(missing)):  # not in Redis: its settled spend
        found[ref.rule.id][""] = state
    return found


def _hmget_all(client, keys: list[str]) -> list[CounterState | None]:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, "sn", "st", "rn", "rt")
    states = []
    for values in pipe.execute() if keys else []:
        states.append(None if values[0] is None else CounterState(*(int(v or 0) for v in values)))
    return states


def _add(total: CounterState, state: CounterState) -> None:
    total.spent_nanos += state.spent_nanos
    total.spent_tokens += state.spent_tokens
    total.reserved_nanos += state.reserved_nanos
    total.reserved_tokens += state.reserved_tokens
