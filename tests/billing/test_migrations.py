"""Upgrading to hourly rollups (billing 0007; 0008 adds the prices applied): the usage already recorded is rolled up
by hour, and the daily rollups are rebuilt from it in exact pico-dollars."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("billing", "0006_request_log_indexes")]
AFTER = [("billing", "0007_usage_hourly_rollups")]
D = datetime(2031, 5, 1, tzinfo=timezone.utc)


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_the_upgrade_rolls_up_existing_usage_by_hour_and_rebuilds_the_days_exactly(issued_key):
    old = _migrate(BEFORE)
    try:
        key = issued_key.api_key
        record = old.get_model("billing", "UsageRecord")
        record.objects.bulk_create([
            record(request_id=uuid.uuid4(), org_id=key.org_id, api_key_id=key.pk, requested_model="m",
                   status="completed", prompt_tokens=1, completion_tokens=2, cost_usd=Decimal("0.1"),
                   started_at=D + timedelta(hours=n % 3, minutes=n % 60), ended_at=D + timedelta(hours=3))
            for n in range(300)
        ])
        old.get_model("billing", "UsageDailyRollup").objects.create(
            org_id=key.org_id, api_key_id=key.pk, day=D.date(), requests=1, cost_usd=Decimal("1"))
    finally:
        _migrate(AFTER)
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    from billing.models import UsageDailyRollup, UsageRollup

    assert sorted(UsageRollup.objects.values_list("hour", "requests", "cost_picos")) == [
        (D + timedelta(hours=h), 100, 10 * 10 ** 12) for h in range(3)]
    [day] = UsageDailyRollup.objects.all()
    assert (day.day, day.requests, day.prompt_tokens, day.cost_usd) == (D.date(), 300, 300, Decimal("30"))


@pytest.mark.django_db(transaction=True)
def test_the_reports_upgrade_rebuilds_the_rollups_by_the_prices_applied(issued_key):
    from billing.rollups import usage_rollup_hours

    old = _migrate([("billing", "0007_usage_hourly_rollups")])
    try:
        key = issued_key.api_key
        record = old.get_model("billing", "UsageRecord")
        record.objects.bulk_create([
            record(request_id=uuid.uuid4(), org_id=key.org_id, api_key_id=key.pk, requested_model="m",
                   status="completed", cost_usd=Decimal("0.5"), started_at=D, ended_at=D,
                   input_price_per_mtok=Decimal(price), output_price_per_mtok=Decimal("2"))
            for price in ("1", "1", "0.75")
        ])
        models = (record, old.get_model("billing", "UsageRollup"), old.get_model("billing", "UsageDailyRollup"))
        usage_rollup_hours(D, D + timedelta(hours=1), models=models)
        assert old.get_model("billing", "UsageRollup").objects.count() == 1  # no prices yet
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    from billing.models import UsageRollup

    assert sorted(UsageRollup.objects.values_list("input_price_per_mtok", "requests", "cost_picos")) == [
        (Decimal("0.75"), 1, 5 * 10 ** 11), (Decimal("1"), 2, 10 ** 12)]
