"""Budgets as the gateway sees them: which apply to a request, their calendar
windows, what a request reserves, and how a refusal is explained.

The ledgers (`billing.ledger`) keep the counters; this module holds no state (each
org's budgets are cached in `gateway.budgeting`, as fresh as routes and keys).
"""
from __future__ import annotations

import calendar
import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import ROUND_CEILING, Decimal
from typing import Any

from billing.models import Budget
from catalog.money import Prices, format_usd, nanos_to_usd, request_cost, usd_to_nanos

# The prompt is counted with litellm's tokenizer for the model, which can differ
# slightly from the provider's own count: reserve a margin above it.
PROMPT_MARGIN = Decimal("1.10")
PROMPT_MARGIN_TOKENS = 16
EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)


@dataclass(frozen=True)
class BudgetRule:
    """One enabled budget, detached from the ORM."""

    id: int
    org_id: int
    name: str
    scope: str
    api_key_id: int | None
    window: str
    limit_nanos: int | None
    limit_tokens: int | None
    route_id: int | None
    deployment_id: int | None
    soft_threshold_percent: int
    throttle_rpm: int | None
    fallback_route: str | None  # the alias to re-route to, for a fallback budget

    @property
    def filtered(self) -> bool:
        return self.route_id is not None or self.deployment_id is not None

    @classmethod
    def from_model(cls, budget: Budget) -> "BudgetRule":
        fallback = budget.fallback_route.alias if (
            budget.hard_action == Budget.HardAction.FALLBACK and budget.fallback_route_id) else None
        return cls(
            id=budget.pk, org_id=budget.org_id, name=budget.name, scope=budget.scope, api_key_id=budget.api_key_id, window=budget.window,
            limit_nanos=usd_to_nanos(budget.limit_usd) if budget.limit_usd is not None else None,
            limit_tokens=budget.limit_tokens, route_id=budget.route_id, deployment_id=budget.deployment_id,
            soft_threshold_percent=budget.soft_threshold_percent, throttle_rpm=budget.throttle_rpm,
            fallback_route=fallback,
        )

    def describe(self) -> str:
        scope = {"org": "organization", "key": "API key", "end_user": "end user"}[self.scope]
        return f"{self.name!r} ({scope}, {self.window})"


def load_budgets(org_id: int) -> tuple[BudgetRule, ...]:
    """An org's enabled budgets (reads the database)."""
    budgets = Budget.objects.filter(org_id=org_id, enabled=True).select_related("fallback_route").order_by("pk")
    return tuple(BudgetRule.from_model(b) for b in budgets)


def applicable(rules: tuple[BudgetRule, ...], *, key_id: int, end_user: str, route_id: int | None,
               deployment_id: int | None, filtered: bool = True) -> list[BudgetRule]:
    """The budgets a request counts against. Unfiltered budgets always apply
    (within their scope); filtered ones only to their route or deployment."""
    found = []
    for rule in rules:
        if rule.scope == Budget.Scope.KEY and rule.api_key_id != key_id:
            continue
        if rule.scope == Budget.Scope.END_USER and not end_user:
            continue
        if rule.filtered:
            if not filtered:
                continue
            if rule.route_id is not None and rule.route_id != route_id:
                continue
            if rule.deployment_id is not None and rule.deployment_id != deployment_id:
                continue
        found.append(rule)
    return found


def window_bounds(window: str, now: datetime) -> tuple[datetime, datetime | None]:
    """The calendar window (UTC) containing `now`: [start, end); lifetime has no end."""
    now = now.astimezone(dt_timezone.utc)
    if window == Budget.Window.HOUR:
        start = now.replace(minute=0, second=0, microsecond=0)
        return start, start + timedelta(hours=1)
    if window == Budget.Window.DAY:
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if window == Budget.Window.MONTH:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(start.year, start.month)[1]
        return start, start + timedelta(days=days)
    return EPOCH, None


@dataclass(frozen=True)
class CounterRef:
    """One counter: a budget's spend in one window (for one end user, for per-user budgets)."""

    rule: BudgetRule
    subject: str
    window_start: datetime
    window_end: datetime | None

    def redis_key(self, prefix: str) -> str:
        subject = hashlib.sha256(self.subject.encode()).hexdigest()[:16] if self.subject else "-"
        return f"{prefix}:c:{self.rule.id}:{int(self.window_start.timestamp())}:{subject}"

    def ttl_seconds(self, now: datetime) -> int:
        """How long Redis keeps the counter: to its window's end and a day more (0: forever)."""
        if self.window_end is None:
            return 0
        return max(60, int((self.window_end - now).total_seconds()) + 86_400)


def counter_refs(rules: list[BudgetRule], *, end_user: str, at: datetime) -> list[CounterRef]:
    refs = []
    for rule in rules:
        start, end = window_bounds(rule.window, at)
        subject = end_user if rule.scope == Budget.Scope.END_USER else ""
        refs.append(CounterRef(rule=rule, subject=subject, window_start=start, window_end=end))
    return refs


@dataclass
class CounterState:
    spent_nanos: int = 0
    spent_tokens: int = 0
    reserved_nanos: int = 0
    reserved_tokens: int = 0


def reserved_prompt_tokens(counted: int) -> int:
    """The prompt tokens a reservation assumes: the count plus a tokenizer margin."""
    return int((Decimal(counted) * PROMPT_MARGIN).to_integral_value(rounding=ROUND_CEILING)) + PROMPT_MARGIN_TOKENS


@dataclass
class Lease:
    """A request's reservation against its budgets, keyed by the request's id.

    `usage` holds what is needed to write the request's usage record if its
    process dies; `completion_tokens` is the checkpoint of tokens received,
    updated as the stream runs and carried to the ledger when the lease is
    extended."""

    request_id: uuid.UUID
    org_id: int
    refs: list[CounterRef]
    nanos: int
    tokens: int
    usage: dict[str, Any]
    completion_tokens: int = 0
    # Filled by the ledger on admission: each counter's state just after this
    # reservation (for the remaining budget told to the client).
    after: list[CounterState] = field(default_factory=list)
    ledger_ids: list[Any] = field(default_factory=list)  # database ledger: counter row ids

    def payload(self) -> dict[str, Any]:
        return {"usage": self.usage, "nanos": self.nanos, "tokens": self.tokens}


def plan_lease(*, request_id: uuid.UUID, org_id: int, refs: list[CounterRef], prices: Prices, prompt_tokens: int,
               max_tokens: int, usage: dict[str, Any]) -> Lease:
    """The worst case of one attempt: the prompt with its margin and every token
    up to the clamped max_tokens, at the deployment's prices."""
    prompt = reserved_prompt_tokens(prompt_tokens)
    cost = request_cost(prices, prompt_tokens=prompt, completion_tokens=max_tokens)
    return Lease(request_id=request_id, org_id=org_id, refs=refs, nanos=usd_to_nanos(cost),
                 tokens=prompt + max_tokens, usage=usage)


def _over(rule: BudgetRule, lease: Lease, nanos: int, tokens: int) -> bool:
    """Whether `nanos` and `tokens` already counted plus the lease's worst case pass a limit."""
    return ((rule.limit_nanos is not None and nanos + lease.nanos > rule.limit_nanos)
            or (rule.limit_tokens is not None and tokens + lease.tokens > rule.limit_tokens))


def verdict(rule: BudgetRule, state: CounterState, lease: Lease) -> str | None:
    """Whether a counter can take a lease: None (it fits), "exhausted" (settled spend
    alone leaves no room for the worst case: waiting cannot help) or "busy" (it is
    the reservations of requests in flight that stand in the way: they may settle
    below their worst case and leave room)."""
    if _over(rule, lease, state.spent_nanos, state.spent_tokens):
        return "exhausted"
    if _over(rule, lease, state.spent_nanos + state.reserved_nanos, state.spent_tokens + state.reserved_tokens):
        return "busy"
    return None


class BudgetRefusal(Exception):
    """A budget cannot take a request's worst case now. For a filtered budget with a
    fallback, the request may be re-routed instead of refused."""

    def __init__(self, ref: CounterRef, state: CounterState, lease: Lease) -> None:
        self.ref, self.state, self.lease = ref, state, lease
        super().__init__(self.message())

    @property
    def fallback_route(self) -> str | None:
        return self.ref.rule.fallback_route

    def message(self) -> str:
        raise NotImplementedError

    def _resets(self) -> str:
        return (f"; it resets at {self.ref.window_end.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                if self.ref.window_end else "; it does not reset")


class BudgetExhausted(BudgetRefusal):
    """Settled spend leaves no room for the request's worst case: the budget is used
    up until its window resets (402, not retryable)."""

    def message(self) -> str:
        rule, state = self.ref.rule, self.state
        parts = []
        if rule.limit_nanos is not None and state.spent_nanos + self.lease.nanos > rule.limit_nanos:
            parts.append(f"${format_usd(nanos_to_usd(state.spent_nanos))} of "
                         f"${format_usd(nanos_to_usd(rule.limit_nanos))} spent, "
                         f"and this request could cost up to ${format_usd(nanos_to_usd(self.lease.nanos))}")
        if rule.limit_tokens is not None and state.spent_tokens + self.lease.tokens > rule.limit_tokens:
            parts.append(f"{state.spent_tokens} of {rule.limit_tokens} tokens spent, "
                         f"and this request could use up to {self.lease.tokens}")
        return f"budget {rule.describe()} is used up: {'; '.join(parts) or 'no room left'}{self._resets()}"


class BudgetBusy(BudgetRefusal):
    """Settled spend leaves room for the request's worst case, but the reservations of
    requests in flight fill it: they settle to their real cost (usually below their
    worst case), so the request may fit shortly (429 `budget_busy`, retryable).
    `retry_after_ms` is the gateway's estimate of when one of them settles."""

    retry_after_ms: int | None = None

    def message(self) -> str:
        rule, state = self.ref.rule, self.state
        parts = []
        if rule.limit_nanos is not None and (
                state.spent_nanos + state.reserved_nanos + self.lease.nanos > rule.limit_nanos):
            parts.append(f"${format_usd(nanos_to_usd(state.spent_nanos))} of "
                         f"${format_usd(nanos_to_usd(rule.limit_nanos))} spent and "
                         f"${format_usd(nanos_to_usd(state.reserved_nanos))} reserved by requests in flight, "
                         f"and this request could cost up to ${format_usd(nanos_to_usd(self.lease.nanos))}")
        if rule.limit_tokens is not None and (
                state.spent_tokens + state.reserved_tokens + self.lease.tokens > rule.limit_tokens):
            parts.append(f"{state.spent_tokens} of {rule.limit_tokens} tokens spent and {state.reserved_tokens} "
                         f"reserved by requests in flight, and this request could use up to {self.lease.tokens}")
        return (f"budget {rule.describe()} is busy: {'; '.join(parts) or 'no room left'}; it is not used up: "
                f"retry when the reservations in flight settle")


def first_refusal(lease: Lease, states: list[CounterState]) -> BudgetRefusal | None:
    """The refusal to report for a lease its counters cannot take (None: they can).
    A used-up budget beats a busy one (waiting cannot help); among either, filtered
    budgets with a fallback come first: re-routing beats refusing."""
    exhausted: list[BudgetRefusal] = []
    busy: list[BudgetRefusal] = []
    for ref, state in zip(lease.refs, states):
        found = verdict(ref.rule, state, lease)
        if found == "exhausted":
            exhausted.append(BudgetExhausted(ref, state, lease))
        elif found == "busy":
            busy.append(BudgetBusy(ref, state, lease))
    refused = exhausted or busy
    if not refused:
        return None
    refused.sort(key=lambda exc: exc.fallback_route is None)
    return refused[0]


def remaining(refs: list[CounterRef], states: list[CounterState]) -> dict[str, Any] | None:
    """The tightest budget's remaining room for the protocol: the one with the
    smallest share of its limit left."""
    best: tuple[float, dict[str, Any]] | None = None
    for ref, state in zip(refs, states):
        rule = ref.rule
        shares = []
        info: dict[str, Any] = {"budget": rule.name, "remaining_usd": None, "remaining_tokens": None,
                                "window_end": ref.window_end.strftime("%Y-%m-%dT%H:%M:%SZ") if ref.window_end else None}
        if rule.limit_nanos is not None:
            left = max(0, rule.limit_nanos - state.spent_nanos - state.reserved_nanos)
            info["remaining_usd"] = format_usd(nanos_to_usd(left))
            shares.append(left / rule.limit_nanos if rule.limit_nanos else 0.0)
        if rule.limit_tokens is not None:
            left = max(0, rule.limit_tokens - state.spent_tokens - state.reserved_tokens)
            info["remaining_tokens"] = left
            shares.append(left / rule.limit_tokens if rule.limit_tokens else 0.0)
        share = min(shares)
        if best is None or share < best[0]:
            best = (share, info)
    return best[1] if best else None
