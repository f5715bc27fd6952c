"""Reconciliation (billing/reconcile.py, manage.py reconcile_billing, the daily task):
a tampered rollup row or report is caught and audited; --repair rebuilds the hours and
draft reports, and a final report's difference becomes an adjustment on the next."""
from __future__ import annotations

import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

from billing import tasks
from billing.models import BillingReport, BillingReportLine, UsageHourTotal, UsageRollup
from billing.reconcile import billing_reconcile
from billing.reports import report_build, report_finalize
from billing.rollups import usage_rollup_hours
from tenants.models import AuditEvent
from tests.billing.test_reports import DEC, DEC_START, NOV, NOV_START, record

pytestmark = [pytest.mark.django_db]

NOW = DEC_START + timedelta(days=10)


@pytest.fixture
def key(issued_key):
    return issued_key.api_key


@pytest.fixture
def usage(key):
    record(key, NOV_START + timedelta(days=3, hours=4), cost="1")
    record(key, DEC_START + timedelta(days=2, hours=5), cost="2")
    usage_rollup_hours(NOV_START, NOW)


def test_nothing_to_report_when_everything_matches(usage, org):
    report_build(org=org, month=NOV, now=NOW)
    result = billing_reconcile(now=NOW)
    assert result.differences == []
    assert not AuditEvent.objects.filter(action="billing.reconcile_difference").exists()


def test_a_tampered_rollup_row_is_caught_audited_and_repaired(usage, org):
    row = UsageRollup.objects.get(hour=NOV_START + timedelta(days=3, hours=4))
    UsageRollup.objects.filter(pk=row.pk).update(cost_picos=row.cost_picos + 1, requests=2)
    result = billing_reconcile(now=NOW)
    [difference] = result.differences
    assert (difference.kind, difference.period) == ("rollup_hour", (NOV_START + timedelta(days=3, hours=4)).isoformat())
    assert difference.expected["cost_picos"] == 10 ** 12 and difference.found["cost_picos"] == 10 ** 12 + 1
    event = AuditEvent.objects.get(action="billing.reconcile_difference")
    assert event.org_id == org.pk and event.data["found"]["requests"] == 2
    repaired = billing_reconcile(now=NOW, repair=True)
    assert repaired.repaired_hours == 1
    assert billing_reconcile(now=NOW).differences == []


def test_a_tampered_hour_total_is_caught_and_repaired(usage, org):
    hour = NOV_START + timedelta(days=3, hours=4)
    UsageHourTotal.objects.filter(hour=hour).update(requests=7)
    [difference] = billing_reconcile(now=NOW).differences
    assert (difference.kind, difference.period, difference.found["requests"]) == ("hour_total", hour.isoformat(), 7)
    assert billing_reconcile(now=NOW, repair=True).repaired_hours == 1
    assert billing_reconcile(now=NOW).differences == []


def test_a_draft_report_that_differs_is_rebuilt(usage, org):
    report = report_build(org=org, month=NOV, now=NOW)
    BillingReport.objects.filter(pk=report.pk).update(cost_picos=5)
    [difference] = billing_reconcile(now=NOW, repair=True).differences
    assert (difference.kind, difference.report_status) == ("report", "draft")
    report.refresh_from_db()
    assert report.cost_picos == 10 ** 12


def test_a_final_report_is_never_rebuilt_its_difference_goes_on_the_next(usage, org, key):
    report = report_finalize(report=report_build(org=org, month=NOV, now=NOW), now=NOW)
    # Usage written after its hour left the rollup grace window: only the raw records know.
    record(key, NOV_START + timedelta(days=9), cost="4")
    before = (report.cost_picos, report.total_usd)
    result = billing_reconcile(now=NOW, repair=True)
    kinds = sorted((d.kind, d.report_status) for d in result.differences)
    assert kinds == [("report", "final"), ("rollup_hour", "")]
    report.refresh_from_db()
    assert (report.cost_picos, report.total_usd) == before
    [adjustment] = BillingReport.objects.get(org=org, month=DEC).lines.filter(kind=BillingReportLine.Kind.ADJUSTMENT)
    assert (adjustment.usage_month, adjustment.cost_usd) == (NOV, Decimal("4"))
    assert billing_reconcile(now=NOW).differences == []


def test_hours_beat_still_rebuilds_are_not_checked_by_default(key, settings):
    settings.USAGE_ROLLUP_GRACE_SECONDS = 7200
    record(key, NOW - timedelta(minutes=30), cost="1")  # not rolled up yet: beat will
    assert billing_reconcile(now=NOW).differences == []
    assert len(billing_reconcile(now=NOW, end=NOW).differences) == 1


def test_the_command_prints_differences_and_fails_without_repair(usage, org):
    UsageRollup.objects.filter(hour=NOV_START + timedelta(days=3, hours=4)).update(prompt_tokens=0)
    out = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("reconcile_billing", "--since", "2031-11-01", "--until", "2031-12-10", stdout=out)
    assert exc.value.code == 1
    assert "rollup hour 2031-11-04T04:00:00+00:00" in out.getvalue() and "prompt_tokens +10" in out.getvalue()
    call_command("reconcile_billing", "--since", "2031-11-01", "--until", "2031-12-10", "--repair", stdout=out)
    assert "rebuilt 1 hour(s)" in out.getvalue()


def test_the_daily_task_repairs_the_rollups_of_recent_usage(key):
    from django.utils import timezone as django_timezone

    record(key, django_timezone.now() - timedelta(hours=3), cost="3")  # never rolled up, out of beat's window
    result = tasks.reconcile_billing.apply().get()
    assert [d["kind"] for d in result["differences"]] == ["rollup_hour"] and result["repaired_hours"] == 1
    assert UsageRollup.objects.get().cost_picos == 3 * 10 ** 12
