"""Usage rollups through a real Celery worker process: the beat task, sent by name to
the dashboard stack's broker, rolls up the requests the stack served (its own database,
SQLite or PostgreSQL) so that every hourly and daily figure equals the raw usage, and
sending it again rebuilds the same rows."""
from __future__ import annotations

from datetime import datetime

import pytest

pytestmark = pytest.mark.e2e

HOURLY = ("SELECT org_id, hour, api_key_id, deployment_id, deployment_name, end_user, requested_model, via_route_id, "
          "status, requests, prompt_tokens, completion_tokens, cost_picos FROM billing_usagerollup")
# One record's cost in pico-dollars, as the rollup computes it (billing/sums.py).
RAW = ("SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
       "SUM(CAST(ROUND(cost_usd * 1000000000000) AS BIGINT)) FROM billing_usagerecord WHERE started_at >= %s")


def _since(stack, start: datetime):
    # SQLite keeps Django's UTC text form; PostgreSQL compares timestamptz.
    return start.strftime("%Y-%m-%d %H:%M:%S") if stack.sqlite_path is not None else start


def test_a_worker_rolls_up_the_served_requests_exactly_and_again_to_the_same_rows(dashboard_stack):
    stack = dashboard_stack.stack
    client = stack.celery_client()
    result = client.send_task("billing.tasks.rollup_usage").get(timeout=120)
    start = datetime.fromisoformat(result["start"])
    since = _since(stack, start)

    [(requests, prompt, completion, picos)] = stack.query(RAW, (since,))
    assert requests >= len(dashboard_stack.request_ids) > 0
    hourly = stack.query("SELECT SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost_picos) "
                         "FROM billing_usagerollup WHERE hour >= %s", (since,))
    assert [tuple(int(v or 0) for v in hourly[0])] == [(requests, int(prompt), int(completion), int(picos))]
    # The days the run touched are the sums of their hours (here: all the stack's usage).
    daily = stack.query("SELECT SUM(requests), SUM(cost_picos) FROM billing_usagedailyrollup")
    whole = stack.query("SELECT SUM(requests), SUM(cost_picos) FROM billing_usagerollup")
    assert [tuple(map(int, daily[0]))] == [tuple(map(int, whole[0]))]
    statuses = stack.query("SELECT status, SUM(requests) FROM billing_usagerollup WHERE hour >= %s GROUP BY status",
                           (since,))
    raw = stack.query("SELECT status, COUNT(*) FROM billing_usagerecord WHERE started_at >= %s GROUP BY status",
                      (since,))
    assert {status: int(n) for status, n in statuses} == {status: int(n) for status, n in raw}

    rows = sorted(stack.query(HOURLY), key=repr)
    assert result["hourly_rows"] >= 1 and result["daily_rows"] >= 1
    client.send_task("billing.tasks.rollup_usage").get(timeout=120)
    assert sorted(stack.query(HOURLY), key=repr) == rows
