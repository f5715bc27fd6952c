"""Budgets on a request's path: reserve an attempt's worst case before calling
upstream, give it back if the attempt fails before its first token, and tell
the client what is left. Settlement happens when the usage record is written
(billing.recorder), whatever the ending.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from billing import budgets
from billing.budgets import BudgetBusy, BudgetExhausted, BudgetRefusal, BudgetRule, CounterState, Lease
from billing.ledger import keeper
from billing.models import BudgetNotice
from billing.usage import UsageDraft
from catalog.money import format_usd, nanos_to_usd, usd_to_nanos
from catalog.targets import Target
from gateway.freshness import FreshCache
from gateway.protocol import BUDGET_BUSY, ErrorCode, GatewayError
from gateway.ratelimits import Limit, RateLimited, limiter, subject_hash
from gateway.routing import RouteDecision
from tenants.access import KeyPrincipal

log = logging.getLogger(__name__)


_budget_cache = FreshCache()  # org id -> its enabled budgets

# How often a request waiting for room re-checks its budgets when no settlement woke
# it: settlements in this process (and, with Redis, in any) wake it at once, so the
# poll only matters for another process's settlements on the database ledger.
BUSY_POLL_SECONDS = 0.2
# The request being served in this task and when its wait for budget room ends: one
# bounded wait per request, however many candidates and fallback routes it tries.
_busy_deadline: contextvars.ContextVar[tuple[uuid.UUID, float] | None] = contextvars.ContextVar(
    "budget_busy_deadline", default=None)


def busy_wait_seconds() -> float:
    return settings.GATEWAY["BUDGET_BUSY_WAIT_MS"] / 1000


async def org_budgets(org_id: int) -> tuple[BudgetRule, ...]:
    return await _budget_cache.get_or_load(org_id, lambda: database_sync_to_async(budgets.load_budgets)(org_id))


async def reserve_attempt(*, draft: UsageDraft, principal: KeyPrincipal, decision: RouteDecision, target: Target,
                          prompt_tokens: int, max_tokens: int) -> Lease | None:
    """Reserve one attempt's worst case against every budget that applies to it.

    Raises BudgetExhausted when one is used up (settled spend leaves no room for
    the worst case). When only reservations of requests in flight stand in the
    way, waits for them to settle (woken by each settlement) up to the busy wait,
    then raises BudgetBusy with an estimate of when to retry. Returns None when no
    budget applies (nothing to reserve)."""
    rules = await org_budgets(principal.org_id)
    if not rules:
        return None
    found = budgets.applicable(rules, key_id=principal.key_id, end_user=draft.end_user,
                               route_id=decision.route_id, deployment_id=target.deployment_id)
    if not found:
        return None
    refs = budgets.counter_refs(found, end_user=draft.end_user, at=draft.started_at)
    lease = budgets.plan_lease(
        request_id=draft.request_id, org_id=principal.org_id, refs=refs, prices=target.prices,
        prompt_tokens=prompt_tokens, max_tokens=max_tokens, usage=_usage_for_recovery(draft, decision, target,
                                                                                      prompt_tokens, max_tokens))
    books = keeper()
    # Carried by the draft before the reservation is made: if this task is
    # cancelled mid-reserve, the usage writer still settles whatever was reserved.
    draft.lease = lease
    try:
        await _reserve_waiting(books, lease)
    except BudgetExhausted as exc:
        draft.lease = None
        _notify(exc.ref, exc.state, BudgetNotice.Kind.HARD)
        raise
    except BudgetBusy:
        draft.lease = None  # not used up: no notification
        raise
    books.hold(lease)
    try:
        await _throttle_past_soft_threshold(lease)
    except RateLimited:
        await release_attempt(draft)
        raise
    return lease


async def _reserve_waiting(books, lease: Lease) -> None:
    """Reserve, waiting while the budget is busy: until a settlement leaves room, the
    budget turns out used up, or the request's wait is over.

    Of the requests of this process waiting on the same counters, only the first
    (in arrival order) watches them: it re-reads the counters (a plain read, no
    lock) when a settlement wakes it or the poll comes round, and reserves again
    only when they show room or show the budget used up. The others wait their
    turn. So a burst of waiters costs the ledger one read per settlement, not one
    per waiter: they share the ledger's threads with the lease extensions of the
    requests in flight, which must never be held up (a lease not extended in time
    is taken for a lost process's)."""
    key = lease.request_id
    current = _busy_deadline.get()
    if current is None or current[0] != key:
        current = (key, time.monotonic() + busy_wait_seconds())
        _busy_deadline.set(current)
    try:
        await books.ledger.reserve(lease)
        return
    except BudgetBusy as refused:
        busy = refused
    turn = books.waiting_turn(lease)
    try:
        await asyncio.wait_for(turn.acquire(), max(0.0, current[1] - time.monotonic()))
    except TimeoutError:
        busy.retry_after_ms = books.settle_estimate_ms(lease)
        raise busy from None
    try:
        while True:
            now = budgets.first_refusal(lease, await books.ledger.snapshot(lease.refs))
            if not isinstance(now, BudgetBusy):
                try:
                    # Room, or used up: the ledger decides, atomically. Never cut short
                    # by the deadline: a reservation made must be known to be made.
                    await books.ledger.reserve(lease)
                    return
                except BudgetBusy as refused:
                    now = refused  # another process took the room first
            busy = now
            left = current[1] - time.monotonic()
            if left <= 0:
                busy.retry_after_ms = books.settle_estimate_ms(lease)
                raise busy
            await books.wait_for_settlement(min(left, BUSY_POLL_SECONDS))
    finally:
        turn.release()


def refusal_error(exc: BudgetRefusal, request_id: str) -> GatewayError:
    """The error frame of a budget refusal: 402 `budget_exhausted` when the budget is
    used up (not retryable until it resets), 429 `budget_busy` when reservations in
    flight fill it (retryable, with the estimate of when one settles)."""
    if isinstance(exc, BudgetBusy):
        return GatewayError(ErrorCode.RATE_LIMITED, exc.message(), request_id=request_id, retryable=True,
                            retry_after_ms=exc.retry_after_ms or int(BUSY_POLL_SECONDS * 1000), name=BUDGET_BUSY)
    return GatewayError(ErrorCode.BUDGET_EXHAUSTED, exc.message(), request_id=request_id)


def _past_soft_threshold(rule: BudgetRule, state: CounterState) -> int | None:
    """The percentage of the limit used (spent + reserved), if at or past the soft threshold."""
    used = []
    if rule.limit_nanos:
        used.append((state.spent_nanos + state.reserved_nanos) * 100 // rule.limit_nanos)
    if rule.limit_tokens:
        used.append((state.spent_tokens + state.reserved_tokens) * 100 // rule.limit_tokens)
    percent = max(used, default=0)
    return percent if percent >= rule.soft_threshold_percent else None


async def _throttle_past_soft_threshold(lease: Lease) -> None:
    """Past a budget's soft threshold (counting this request), its scope may make at
    most `throttle_rpm` requests a minute: a runaway client slows down before the
    hard wall. Also where the soft-threshold notification is raised."""
    limits = []
    for ref, state in zip(lease.refs, lease.after):
        if _past_soft_threshold(ref.rule, state) is None:
            continue
        _notify(ref, state, BudgetNotice.Kind.SOFT)
        if ref.rule.throttle_rpm:
            window = int(ref.window_start.timestamp())
            subject = f":{subject_hash(ref.subject)}" if ref.subject else ""
            limits.append(Limit(scope=f"throttle:{ref.rule.id}:{window}{subject}",
                                label=f"budget {ref.rule.name!r} past its soft threshold",
                                rpm=ref.rule.throttle_rpm))
    if limits:
        await limiter().admit(limits, 0)


def _notify(ref, state: CounterState, kind: str) -> None:
    """Hand a notification to the Celery worker (once per budget, end user, window and
    kind: deduplicated here, and made exactly-once by the worker)."""
    rule = ref.rule
    figures = {
        "budget": rule.name, "scope": rule.scope, "window": rule.window,
        "limit_usd": format_usd(nanos_to_usd(rule.limit_nanos)) if rule.limit_nanos is not None else None,
        "spent_usd": format_usd(nanos_to_usd(state.spent_nanos + state.reserved_nanos)),
        "limit_tokens": rule.limit_tokens, "spent_tokens": state.spent_tokens + state.reserved_tokens,
        "percent": _past_soft_threshold(rule, state) if kind == BudgetNotice.Kind.SOFT else 100,
        "window_end": ref.window_end.strftime("%Y-%m-%dT%H:%M:%SZ") if ref.window_end else None,
    }
    try:
        from billing.notifications import enqueue_budget_notice

        enqueue_budget_notice(budget_id=rule.id, subject=ref.subject, window_start=ref.window_start, kind=kind,
                              figures=figures)
    except Exception:  # a notification must never fail the request
        log.exception("could not hand budget notice of %s to the worker", rule.name)


async def release_attempt(draft: UsageDraft) -> None:
    """An attempt failed before its first token: give its reservation back."""
    lease = draft.lease
    if lease is None:
        return
    books = keeper()
    await books.ledger.release(lease)
    books.drop(lease)
    draft.lease = None


def remaining_after(draft: UsageDraft) -> dict[str, Any] | None:
    """The tightest budget's room once this request settles (from the state seen
    when it reserved: other requests may have moved it since)."""
    lease: Lease | None = draft.lease
    if lease is None or not lease.after:
        return None
    spent_nanos = usd_to_nanos(draft.cost_usd)
    spent_tokens = draft.prompt_tokens + draft.completion_tokens
    projected = [CounterState(s.spent_nanos + spent_nanos, s.spent_tokens + spent_tokens,
                              s.reserved_nanos - lease.nanos, s.reserved_tokens - lease.tokens) for s in lease.after]
    return budgets.remaining(lease.refs, projected)


async def remaining_for_key(principal: KeyPrincipal) -> dict[str, Any] | None:
    """For auth_ok: the tightest of the org's and this key's unfiltered budgets."""
    rules = await org_budgets(principal.org_id)
    found = budgets.applicable(rules, key_id=principal.key_id, end_user="", route_id=None, deployment_id=None,
                               filtered=False)
    if not found:
        return None
    from django.utils import timezone

    refs = budgets.counter_refs(found, end_user="", at=timezone.now())
    states = await keeper().ledger.snapshot(refs)
    return budgets.remaining(refs, states)


def _usage_for_recovery(draft: UsageDraft, decision: RouteDecision, target: Target, prompt_tokens: int,
                        max_tokens: int) -> dict[str, Any]:
    """What another process needs to write this request's usage if this one dies."""
    return {
        "client_request_id": draft.client_request_id, "api_key_id": draft.api_key_id,
        "requested_model": draft.requested_model, "end_user": draft.end_user,
        "started_at": draft.started_at.isoformat(), "deployment_id": target.deployment_id,
        "deployment_name": target.name, "provider": target.provider, "via_route_id": decision.route_id,
        "route": decision.explain(served_by=target), "prompt_tokens": prompt_tokens, "max_tokens": max_tokens,
        "input_price_per_mtok": str(target.prices.input_per_mtok),
        "output_price_per_mtok": str(target.prices.output_per_mtok),
    }


def reset() -> None:
    """Forget the cached org budgets (gateway.runtime.reset)."""
    _budget_cache.clear()
