"""Budget figures read from the ledger the process uses (billing/budget_status.py)."""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.conf import settings

from billing.budget_status import budget_statuses
from billing.budgets import BudgetRule, CounterRef, window_bounds
from billing.ledger import redis_prefix
from billing.models import Budget, BudgetCounter, UsageRecord
from tenants.services import api_key_create

pytestmark = pytest.mark.django_db

NOW = datetime.now(dt_timezone.utc)


def _ref(budget, subject=""):
    start, end = window_bounds(budget.window, NOW)
    return CounterRef(rule=BudgetRule.from_model(budget), subject=subject, window_start=start, window_end=end)


@pytest.fixture
def redis_client():
    if not settings.REDIS_URL:
        pytest.skip("the Redis ledger is used only with REDIS_URL")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match=f"{redis_prefix()}:c:*"):
        client.delete(key)
    yield client
    for key in client.scan_iter(match=f"{redis_prefix()}:c:*"):
        client.delete(key)
    client.close()


def _hset(client, ref, sn, st, rn, rt):
    client.hset(ref.redis_key(redis_prefix()), mapping={"sn": sn, "st": st, "rn": rn, "rt": rt})


def test_figures_come_from_the_redis_counters_when_redis_holds_them(org, redis_client):
    budget = Budget.objects.create(org=org, name="m", limit_usd=Decimal("0.01"), limit_tokens=500)
    BudgetCounter.objects.create(budget=budget, window_start=_ref(budget).window_start, spent_nanos=1)  # not read
    _hset(redis_client, _ref(budget), 3_333_333, 120, 1_000_000, 40)
    [status] = budget_statuses(org)
    f = status.figures
    assert (f.spent_usd, f.spent_tokens, f.reserved_usd, f.reserved_tokens) == (
        Decimal("0.003333333"), 120, Decimal("0.001"), 40)
    assert f.remaining_usd == Decimal("0.005666667") and f.remaining_tokens == 340


def test_a_counter_redis_lacks_is_the_windows_settled_usage(org, redis_client):
    key = api_key_create(org=org, name="k").api_key
    UsageRecord.objects.create(org=org, api_key=key, requested_model="m", status="completed",
                               cost_usd=Decimal("0.000000000500"), prompt_tokens=1, completion_tokens=1)
    budget = Budget.objects.create(org=org, name="m", limit_usd=Decimal("1"))
    [status] = budget_statuses(org)
    assert status.figures.spent_usd == Decimal("0.000000001")  # rounded up, as the ledger counts it
    assert status.figures.spent_tokens == 2


def test_per_end_user_counters_in_redis_are_named_from_usage(org, redis_client):
    key = api_key_create(org=org, name="k").api_key
    budget = Budget.objects.create(org=org, name="each", scope="end_user", limit_usd=Decimal("1"))
    for user in ("alice", "bob"):
        UsageRecord.objects.create(org=org, api_key=key, requested_model="m", status="completed", end_user=user)
    _hset(redis_client, _ref(budget, "alice"), 700_000_000, 10, 0, 0)
    _hset(redis_client, _ref(budget, "bob"), 100_000_000, 5, 5, 1)
    _hset(redis_client, _ref(budget, "carol-in-flight"), 0, 0, 50_000_000, 9)  # no usage record yet
    [status] = budget_statuses(org)
    assert [(s.subject, s.figures.spent_usd) for s in status.subjects] == [
        ("alice", Decimal("0.7")), ("bob", Decimal("0.1"))]
    assert status.figures.spent_usd == Decimal("0.8")
    assert status.figures.reserved_usd == Decimal("0.050000005") and status.figures.reserved_tokens == 10


def test_the_database_ledger_is_read_without_redis(org):
    if settings.REDIS_URL:
        pytest.skip("the database ledger is used without REDIS_URL")
    budget = Budget.objects.create(org=org, name="m", limit_tokens=1000)
    BudgetCounter.objects.create(budget=budget, window_start=_ref(budget).window_start, spent_tokens=999,
                                 reserved_tokens=1)
    [status] = budget_statuses(org)
    assert status.figures.remaining_tokens == 0 and status.figures.percent_used == Decimal("99.9")
    assert status.state == "near"
