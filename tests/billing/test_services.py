"""Writes to billing data (billing/services.py) against the pass's database: usage
records are written once, a record the database refuses is an error on SQLite as on
PostgreSQL, and a day's rollup can be rebuilt any number of times."""
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import IntegrityError

from billing.models import UsageDailyRollup, UsageRecord
from billing.services import usage_records_write, usage_rollup_day
from tests.support.usage import draft_for

pytestmark = [pytest.mark.django_db(transaction=True)]

DAY = date(2031, 5, 1)
NOON = datetime(2031, 5, 1, 12, tzinfo=timezone.utc)


def test_writing_a_record_twice_keeps_the_first(issued_key):
    draft = draft_for(issued_key, started_at=NOON)
    usage_records_write([draft])
    usage_records_write([draft_for(issued_key, request_id=draft.request_id, completion_tokens=999)])
    record = UsageRecord.objects.get()
    assert (record.pk, record.completion_tokens, record.cost_usd) == (draft.request_id, 5, Decimal("0.000075"))
    assert record.ended_at is not None  # stamped when the draft had none


def test_a_record_the_database_refuses_is_an_error_not_a_silent_skip(issued_key):
    good, bad = draft_for(issued_key), draft_for(issued_key, prompt_tokens=-1)
    with pytest.raises(IntegrityError, match=str(bad.request_id)):
        usage_records_write([good, bad])
    assert not UsageRecord.objects.filter(pk=bad.request_id).exists()


def test_a_days_rollup_counts_its_records_and_rebuilding_it_changes_nothing(issued_key):
    usage_records_write([draft_for(issued_key, started_at=NOON) for _ in range(3)]
                        + [draft_for(issued_key, started_at=NOON + timedelta(days=1))])  # the next day
    assert usage_rollup_day(day=DAY) == 1
    assert usage_rollup_day(day=DAY) == 1
    [rollup] = UsageDailyRollup.objects.filter(day=DAY)
    assert (rollup.requests, rollup.prompt_tokens, rollup.completion_tokens) == (3, 30, 15)
    assert rollup.cost_usd == Decimal("0.000225")
    assert UsageDailyRollup.objects.count() == 1
