"""Monthly billing reports through a real Celery worker process: the beat tasks, sent by
name to the dashboard stack's broker, roll up the requests the stack served and build
each org's draft report, whose totals equal the raw usage of its month exactly; sending
them again changes nothing; the reconcile task finds no difference."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

pytestmark = pytest.mark.e2e

REPORTS = ("SELECT org_id, month, status, requests, prompt_tokens, completion_tokens, cost_picos, total_usd "
           "FROM billing_billingreport ORDER BY org_id, month")
LINES = ("SELECT r.org_id, r.month, l.kind, l.deployment_name, l.requests, l.cost_picos, l.amount_usd "
         "FROM billing_billingreportline l JOIN billing_billingreport r ON r.id = l.report_id")
RAW = ("SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), "
       "SUM(CAST(ROUND(cost_usd * 1000000000000) AS BIGINT)) FROM billing_usagerecord "
       "WHERE org_id = %s AND started_at >= %s AND started_at < %s")


def _bound(stack, month: date) -> object:
    moment = datetime(month.year, month.month, 1, tzinfo=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S") if stack.sqlite_path is not None else moment


def _month(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def test_a_worker_builds_the_monthly_reports_equal_to_the_raw_usage(dashboard_stack):
    stack = dashboard_stack.stack
    client = stack.celery_client()
    client.send_task("billing.tasks.rollup_usage").get(timeout=120)
    result = client.send_task("billing.tasks.refresh_billing_reports").get(timeout=120)
    assert result["orgs"] >= 1 and result["built"] >= 1

    reports = stack.query(REPORTS)
    assert reports and {status for *_, status, _r, _p, _c, _picos, _total in reports} <= {"draft", "final"}
    served = 0
    for org_id, month, _status, requests, prompt, completion, picos, _total in reports:
        month = _month(month)
        following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
        [(raw_requests, raw_prompt, raw_completion, raw_picos)] = stack.query(
            RAW, (org_id, _bound(stack, month), _bound(stack, following)))
        assert (int(requests), int(prompt), int(completion), int(picos)) == (
            int(raw_requests), int(raw_prompt or 0), int(raw_completion or 0), int(raw_picos or 0))
        served += int(requests)
    assert served >= len(dashboard_stack.request_ids)

    lines = sorted(stack.query(LINES), key=repr)
    client.send_task("billing.tasks.refresh_billing_reports").get(timeout=120)
    assert stack.query(REPORTS) == reports and sorted(stack.query(LINES), key=repr) == lines

    reconcile = client.send_task("billing.tasks.reconcile_billing").get(timeout=120)
    assert reconcile["differences"] == []
