"""Creating and changing budgets from the dashboard (and any other caller): each write
runs in one transaction with its audit event.

The gateway sees a change within about half a second with no further step: every
write to the budget table bumps `ConfigVersion` through a database trigger
(migration gateway 0008), which invalidates each gateway process's cached budgets
(gateway/freshness.py) — the same path as an edit in the admin.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db import transaction

from billing.models import Budget
from tenants.audit import record_event
from tenants.models import AuditEvent, Organization

Actor = AuditEvent.ActorType

# The fields a budget form edits, in the order the audit event lists them.
EDITABLE_FIELDS = ["name", "scope", "api_key", "window", "limit_usd", "limit_tokens", "route", "deployment",
                   "soft_threshold_percent", "throttle_rpm", "hard_action", "fallback_route", "enabled"]


def _value(budget: Budget, field: str) -> Any:
    """A field's value as the audit log shows it: public ids and names, not primary keys."""
    value = getattr(budget, field)
    if value is None:
        return None
    if field == "api_key":
        return value.display
    if field in ("route", "fallback_route"):
        return value.alias
    if field == "deployment":
        return value.name
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return value


def _snapshot(budget: Budget) -> dict[str, Any]:
    return {field: _value(budget, field) for field in EDITABLE_FIELDS}


def budget_create(*, org: Organization, budget: Budget, actor_type: str = Actor.SYSTEM,
                  actor: str = "system") -> Budget:
    """Save a new, validated budget of `org` (the caller ran `full_clean`, e.g. a form)."""
    if budget.pk is not None:
        raise ValueError("budget_create saves a new budget")
    budget.org = org
    with transaction.atomic():
        budget.save()
        record_event(org=org, actor_type=actor_type, actor=actor, action="budget.create", target_type="budget",
                     target_id=str(budget.public_id), data=_snapshot(budget))
    return budget


def budget_update(*, budget: Budget, before: dict[str, Any], actor_type: str = Actor.SYSTEM,
                  actor: str = "system") -> Budget:
    """Save a validated change to an existing budget; the audit event lists each changed
    field as [before, after]. `before` is `budget_values(budget)` taken before the
    change was applied. Nothing changed: nothing is written."""
    after = _snapshot(budget)
    changed = {field: [before.get(field), after[field]] for field in EDITABLE_FIELDS
               if before.get(field) != after[field]}
    if not changed:
        return budget
    with transaction.atomic():
        budget.save()
        record_event(org=budget.org, actor_type=actor_type, actor=actor, action="budget.update",
                     target_type="budget", target_id=str(budget.public_id),
                     data={"name": budget.name, "changed": changed})
    return budget


def budget_values(budget: Budget) -> dict[str, Any]:
    """The audited values of a budget's fields (take it before applying a change)."""
    return _snapshot(budget)
