"""Where each of an org's budgets stands in its current window (the budgets pages).

Figures are exact: counters hold integer nano-dollars and tokens, converted to
Decimal only for display. They are read through `billing.ledger.read_counters`,
from whichever ledger this process uses (database rows, or Redis when REDIS_URL
is set), so a page shows what the gateway admits against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.utils import timezone

from billing.budgets import BudgetRule, CounterRef, CounterState, window_bounds
from billing.ledger import read_counters
from billing.models import Budget, UsageRecord
from catalog.money import nanos_to_usd
from tenants.models import Organization

TOP_SUBJECTS = 5
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Figures:
    """Spend against one limit pair (a budget's total, or one end user's counter)."""

    limit_usd: Decimal | None
    limit_tokens: int | None
    spent_usd: Decimal
    spent_tokens: int
    reserved_usd: Decimal
    reserved_tokens: int

    @classmethod
    def of(cls, budget: Budget, state: CounterState) -> "Figures":
        return cls(limit_usd=budget.limit_usd, limit_tokens=budget.limit_tokens,
                   spent_usd=nanos_to_usd(state.spent_nanos), spent_tokens=state.spent_tokens,
                   reserved_usd=nanos_to_usd(state.reserved_nanos), reserved_tokens=state.reserved_tokens)

    @property
    def remaining_usd(self) -> Decimal | None:
        if self.limit_usd is None:
            return None
        return max(Decimal(0), self.limit_usd - self.spent_usd - self.reserved_usd)

    @property
    def remaining_tokens(self) -> int | None:
        if self.limit_tokens is None:
            return None
        return max(0, self.limit_tokens - self.spent_tokens - self.reserved_tokens)

    @property
    def percent_used(self) -> Decimal:
        """Settled spend as a share of the tighter limit, in percent (may pass 100)."""
        shares = []
        if self.limit_usd:
            shares.append(self.spent_usd * HUNDRED / self.limit_usd)
        if self.limit_tokens:
            shares.append(Decimal(self.spent_tokens) * HUNDRED / self.limit_tokens)
        return max(shares, default=Decimal(0))

    @property
    def percent_display(self) -> Decimal:
        return self.percent_used.quantize(Decimal("0.1"))

    @property
    def meter_value(self) -> Decimal:
        """For a <meter max="100">: the percentage, capped at 100."""
        return min(self.percent_used, HUNDRED)


@dataclass(frozen=True)
class SubjectStatus:
    subject: str  # the end user ("" for counters Redis could not name)
    figures: Figures


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    window_start: datetime
    window_end: datetime | None
    figures: Figures
    subjects: list[SubjectStatus] = field(default_factory=list)  # per-end-user budgets: the top few
    subject_count: int = 0

    @property
    def per_subject(self) -> bool:
        return self.budget.scope == Budget.Scope.END_USER

    @property
    def meter_figures(self) -> Figures:
        """What the meter shows: the total, or for a per-end-user budget (whose limit
        applies to each end user) the end user closest to the limit."""
        if not self.per_subject:
            return self.figures
        empty = Figures.of(self.budget, CounterState())
        return max((s.figures for s in self.subjects), key=lambda f: f.percent_used, default=empty)

    @property
    def state(self) -> str:
        """"over", "near" (past the soft threshold) or "ok", for the meter's class."""
        figures = self.meter_figures
        if figures.percent_used >= HUNDRED:
            return "over"
        if figures.percent_used >= self.budget.soft_threshold_percent:
            return "near"
        return "ok"


def _sum(states) -> CounterState:
    total = CounterState()
    for s in states:
        total.spent_nanos += s.spent_nanos
        total.spent_tokens += s.spent_tokens
        total.reserved_nanos += s.reserved_nanos
        total.reserved_tokens += s.reserved_tokens
    return total


def _end_users_in_window(budgets: list[Budget], refs: dict[int, CounterRef]) -> dict[int, list[str]]:
    """End users with usage in each per-end-user budget's window (names for Redis
    counters): one query per distinct window, whatever the number of budgets."""
    windows: dict[tuple, list[int]] = {}
    for budget in budgets:
        if budget.scope == Budget.Scope.END_USER:
            ref = refs[budget.pk]
            windows.setdefault((ref.window_start, ref.window_end), []).append(budget.pk)
    found: dict[int, list[str]] = {}
    for (start, end), budget_ids in windows.items():
        records = UsageRecord.objects.filter(org_id=budgets[0].org_id, started_at__gte=start).exclude(end_user="")
        if end is not None:
            records = records.filter(started_at__lt=end)
        users = list(records.order_by().values_list("end_user", flat=True).distinct()[:10_000])
        for budget_id in budget_ids:
            found[budget_id] = users
    return found


def budget_statuses(org: Organization, *, at: datetime | None = None,
                    budgets: list[Budget] | None = None) -> list[BudgetStatus]:
    """Every budget of `org` (or the given ones), with its figures for the window
    containing `at` (now). Disabled budgets are included (their counters still show
    what the window spent up to when they were disabled)."""
    at = at or timezone.now()
    if budgets is None:
        budgets = list(Budget.objects.filter(org=org).select_related(
            "api_key", "route", "deployment", "fallback_route").order_by("name", "pk"))
    refs: dict[int, CounterRef] = {}
    for budget in budgets:
        start, end = window_bounds(budget.window, at)
        refs[budget.pk] = CounterRef(rule=BudgetRule.from_model(budget), subject="", window_start=start,
                                     window_end=end)
    subjects_of = _end_users_in_window(budgets, refs) if _uses_redis() else None
    counters = read_counters(list(refs.values()), subjects_of=subjects_of)
    statuses = []
    for budget in budgets:
        ref = refs[budget.pk]
        states = counters.get(budget.pk, {})
        subjects: list[SubjectStatus] = []
        count = 0
        if budget.scope == Budget.Scope.END_USER:
            named = [(subject, state) for subject, state in states.items() if subject]
            count = len(named)
            named.sort(key=lambda item: (-(item[1].spent_nanos + item[1].reserved_nanos),
                                         -(item[1].spent_tokens + item[1].reserved_tokens), item[0]))
            subjects = [SubjectStatus(subject, Figures.of(budget, state)) for subject, state in named[:TOP_SUBJECTS]]
        total = _sum(states.values())
        statuses.append(BudgetStatus(budget=budget, window_start=ref.window_start, window_end=ref.window_end,
                                     figures=Figures.of(budget, total), subjects=subjects, subject_count=count))
    return statuses


def _uses_redis() -> bool:
    from django.conf import settings

    return bool(settings.REDIS_URL)
