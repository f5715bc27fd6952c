"""Monthly billing reports (billing/reports.py): built from the rollups, exact; draft ->
final after the grace window; a final report never changes; late usage becomes an
adjustment on the next report; the lines add up to the total as displayed; the month
boundary is UTC midnight of the 1st."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from billing.models import BillingReport, BillingReportLine, UsageRecord
from billing.reports import (
    ReportIsFinal, ReportNotDue, report_build, report_finalize, report_tables, reports_refresh,
)
from billing.rollups import usage_rollup_hours
from catalog.money import display_usd, invoice_amount
from tenants.models import AuditEvent
from tenants.services import api_key_create

pytestmark = [pytest.mark.django_db]

NOV = date(2031, 11, 1)
DEC = date(2031, 12, 1)
NOV_START = datetime(2031, 11, 1, tzinfo=timezone.utc)
DEC_START = datetime(2031, 12, 1, tzinfo=timezone.utc)
Kind = BillingReportLine.Kind


def record(key, started_at, cost="0.001", deployment="mock-fast", prices=("1", "2"), end_user="", prompt=10,
           completion=5):
    return UsageRecord.objects.create(
        org=key.org, api_key=key, requested_model=deployment, deployment_name=deployment, status="completed",
        started_at=started_at, ended_at=started_at, cost_usd=Decimal(cost), prompt_tokens=prompt,
        completion_tokens=completion, end_user=end_user,
        input_price_per_mtok=Decimal(prices[0]) if prices else None,
        output_price_per_mtok=Decimal(prices[1]) if prices else None,
    )


def rollup(start=NOV_START, end=DEC_START + timedelta(days=31)):
    usage_rollup_hours(start, end)


@pytest.fixture
def key(issued_key):
    return issued_key.api_key


def lines_of(report, kind):
    return list(report.lines.filter(kind=kind).order_by("deployment_name", "input_price_per_mtok", "end_user"))


def test_a_draft_has_lines_by_deployment_and_prices_and_subtotals_by_key_and_end_user(key, org):
    other_key = api_key_create(org=org, name="second").api_key
    record(key, NOV_START + timedelta(days=2), cost="0.5", end_user="alice")
    record(key, NOV_START + timedelta(days=3), cost="0.25", end_user="bob")
    record(other_key, NOV_START + timedelta(days=4), cost="1.125", prices=("0.5", "1"), end_user="alice")
    record(other_key, NOV_START + timedelta(days=5), cost="2", deployment="mock-slow")
    rollup()
    report = report_build(org=org, month=NOV)
    assert report.status == "draft" and report.finalized_at is None
    assert (report.requests, report.prompt_tokens, report.completion_tokens) == (4, 40, 20)
    assert report.cost_usd == Decimal("3.875")
    deployments = [(line.deployment_name, line.input_price_per_mtok, line.requests, line.cost_usd)
                   for line in lines_of(report, Kind.DEPLOYMENT)]
    # The rate-card price (0.5) is a line of its own.
    assert deployments == [("mock-fast", Decimal("0.5"), 1, Decimal("1.125")),
                           ("mock-fast", Decimal("1"), 2, Decimal("0.75")),
                           ("mock-slow", Decimal("1"), 1, Decimal("2"))]
    assert {(line.api_key_id, line.cost_usd) for line in lines_of(report, Kind.API_KEY)} == {
        (key.pk, Decimal("0.75")), (other_key.pk, Decimal("3.125"))}
    assert [(line.end_user, line.cost_usd) for line in lines_of(report, Kind.END_USER)] == [
        ("", Decimal("2")), ("alice", Decimal("1.625")), ("bob", Decimal("0.25"))]


def test_building_twice_gives_the_same_report(key, org):
    record(key, NOV_START + timedelta(days=2), cost="0.123456789")
    rollup()
    first = report_build(org=org, month=NOV)
    before = sorted(first.lines.values_list("kind", "deployment_name", "requests", "cost_picos", "amount_usd"))
    second = report_build(org=org, month=NOV)
    assert second.pk == first.pk and BillingReport.objects.count() == 1
    assert sorted(second.lines.values_list("kind", "deployment_name", "requests", "cost_picos", "amount_usd")) == before
    assert second.total_usd == first.total_usd == Decimal("0.12")


def test_the_month_ends_at_utc_midnight_of_the_first(key, org):
    record(key, DEC_START - timedelta(microseconds=1000), cost="1")  # 23:59:59.999 on 30 November
    record(key, DEC_START, cost="10")  # 00:00 on 1 December
    rollup()
    nov, dec = report_build(org=org, month=NOV), report_build(org=org, month=DEC)
    assert (nov.requests, nov.cost_usd) == (1, Decimal("1"))
    assert (dec.requests, dec.cost_usd) == (1, Decimal("10"))


def test_a_report_becomes_final_only_after_the_month_and_the_grace_window(key, org, settings):
    settings.BILLING_GRACE_SECONDS = 6 * 3600
    record(key, NOV_START + timedelta(days=1), cost="1")
    rollup()
    report = report_build(org=org, month=NOV)
    with pytest.raises(ReportNotDue):
        report_finalize(report=report, now=DEC_START + timedelta(hours=5, minutes=59))
    report.refresh_from_db()
    assert report.status == "draft"
    final = report_finalize(report=report, now=DEC_START + timedelta(hours=6))
    assert final.status == "final" and final.finalized_at == DEC_START + timedelta(hours=6)
    event = AuditEvent.objects.get(action="billing.report_finalized")
    assert event.target_id == str(report.public_id) and event.data["total_usd"] == "1.00"


def test_a_final_report_never_changes(key, org):
    record(key, NOV_START + timedelta(days=1), cost="1")
    rollup()
    report = report_finalize(report=report_build(org=org, month=NOV), now=DEC_START + timedelta(days=1))
    before = (report.cost_picos, report.total_usd, report.built_at,
              sorted(report.lines.values_list("kind", "cost_picos")))
    record(key, NOV_START + timedelta(days=2), cost="5")
    rollup()
    with pytest.raises(ReportIsFinal):
        report_build(org=org, month=NOV)
    with pytest.raises(ReportIsFinal):
        report_finalize(report=report, now=DEC_START + timedelta(days=2))
    reports_refresh(now=DEC_START + timedelta(days=2))
    report.refresh_from_db()
    assert (report.cost_picos, report.total_usd, report.built_at,
            sorted(report.lines.values_list("kind", "cost_picos"))) == before


def test_late_usage_of_a_final_month_is_an_adjustment_on_the_next_report_once(key, org):
    record(key, NOV_START + timedelta(days=1), cost="1")
    rollup()
    report_finalize(report=report_build(org=org, month=NOV), now=DEC_START + timedelta(days=1))
    # Two late records of November (one at another deployment), one of December.
    record(key, NOV_START + timedelta(days=20), cost="2")
    record(key, NOV_START + timedelta(days=21), cost="0.5", deployment="mock-slow")
    record(key, DEC_START + timedelta(days=3), cost="3")
    rollup()
    dec = report_build(org=org, month=DEC)
    adjustments = [(line.deployment_name, line.usage_month, line.requests, line.cost_usd)
                   for line in lines_of(dec, Kind.ADJUSTMENT)]
    assert adjustments == [("mock-fast", NOV, 1, Decimal("2")), ("mock-slow", NOV, 1, Decimal("0.5"))]
    assert dec.cost_usd == Decimal("3")  # the month's own usage
    assert dec.total_usd == Decimal("5.50")  # its own usage plus the adjustments
    # Rebuilt: still once. Finalised, then more late November usage: only that one goes on January.
    assert report_build(org=org, month=DEC).total_usd == Decimal("5.50")
    report_finalize(report=dec, now=DEC_START + timedelta(days=32))
    record(key, NOV_START + timedelta(days=22), cost="7")
    rollup()
    jan = report_build(org=org, month=date(2032, 1, 1))
    assert [(line.usage_month, line.requests, line.cost_usd) for line in lines_of(jan, Kind.ADJUSTMENT)] == [
        (NOV, 1, Decimal("7"))]
    assert jan.total_usd == Decimal("7.00")


def test_late_usage_goes_on_the_earliest_later_draft(key, org):
    record(key, date_start := NOV_START - timedelta(days=20), cost="1")
    rollup(start=date_start)
    oct_report = report_build(org=org, month=date(2031, 10, 1))
    report_finalize(report=oct_report, now=NOV_START + timedelta(days=1))
    report_build(org=org, month=NOV)
    record(key, date_start + timedelta(days=1), cost="2")
    rollup(start=date_start)
    nov, dec = report_build(org=org, month=NOV), report_build(org=org, month=DEC)
    assert [line.cost_usd for line in lines_of(nov, Kind.ADJUSTMENT)] == [Decimal("2")]
    assert lines_of(dec, Kind.ADJUSTMENT) == []


def test_the_billed_lines_add_up_to_the_total_as_displayed(key, org):
    # Three lines of $0.005 each: each rounds half-up to $0.01, so the total is $0.03
    # (rounding the exact $0.015 once would give $0.02 and the page would not add up).
    for name in ("a", "b", "c"):
        record(key, NOV_START + timedelta(days=1), cost="0.005", deployment=name)
    rollup()
    report = report_build(org=org, month=NOV)
    billed = [line.amount_usd for line in report.lines.filter(kind__in=BillingReportLine.BILLED_KINDS)]
    assert billed == [Decimal("0.01")] * 3
    assert report.total_usd == sum(billed) == Decimal("0.03")
    assert display_usd(report.total_usd) == "$0.03"


@pytest.mark.parametrize("picos, amount", [(0, "0.00"), (4_999_999_999, "0.00"), (5_000_000_000, "0.01"),
                                           (-5_000_000_000, "-0.01"), (123_455_000_000_000, "123.46")])
def test_invoice_amounts_round_half_up_to_cents(picos, amount):
    assert invoice_amount(picos) == Decimal(amount)


def test_invoice_amount_refuses_anything_but_integer_picos():
    with pytest.raises(TypeError):
        invoice_amount(Decimal("1"))


def test_refresh_builds_open_and_previous_month_and_finalises_what_is_due(key, org, other_org):
    record(key, NOV_START + timedelta(days=29), cost="1")
    record(key, DEC_START + timedelta(hours=1), cost="2")
    rollup()
    result = reports_refresh(now=DEC_START + timedelta(hours=2))
    assert result["finalized"] == 0
    assert dict(BillingReport.objects.filter(org=org).values_list("month", "status")) == {NOV: "draft", DEC: "draft"}
    assert not BillingReport.objects.filter(org=other_org).exists()  # no usage, no report
    reports_refresh(now=DEC_START + timedelta(hours=7))
    assert dict(BillingReport.objects.filter(org=org).values_list("month", "status")) == {NOV: "final", DEC: "draft"}
    reports_refresh(now=DEC_START + timedelta(hours=8))  # again: nothing moves
    assert BillingReport.objects.filter(org=org).count() == 2


def test_report_tables_group_the_lines(key, org):
    record(key, NOV_START + timedelta(days=1), end_user="alice")
    rollup()
    tables = report_tables(report_build(org=org, month=NOV))
    assert [len(tables[name]) for name in ("lines", "keys", "end_users", "adjustments")] == [1, 1, 1, 0]


def test_a_month_is_given_by_its_first_day(org):
    with pytest.raises(ValueError):
        report_build(org=org, month=date(2031, 11, 2))


def test_the_grace_window_must_outlast_the_rollup_grace(monkeypatch):
    import importlib

    import openclaw_site.settings as module
    monkeypatch.setenv("OPENCLAW_BILLING_GRACE_SECONDS", "3600")
    monkeypatch.setenv("OPENCLAW_ROLLUP_GRACE_SECONDS", "7200")
    try:
        with pytest.raises(ImproperlyConfigured, match="OPENCLAW_BILLING_GRACE_SECONDS"):
            importlib.reload(module)
    finally:
        monkeypatch.undo()
        importlib.reload(module)


def test_beat_refreshes_the_reports_and_reconciles_daily(key, org, settings):
    from django.utils import timezone as django_timezone

    from billing import tasks

    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["billing.tasks.refresh_billing_reports"] == settings.BILLING_REPORT_INTERVAL_SECONDS == 300
    assert schedule["billing.tasks.reconcile_billing"] == 86400
    started = django_timezone.now() - timedelta(minutes=1)
    record(key, started, cost="2")
    tasks.rollup_usage.apply().get()
    result = tasks.refresh_billing_reports.apply().get()
    assert result["orgs"] == 1
    report = BillingReport.objects.get(org=org, month=started.date().replace(day=1))
    assert report.status == "draft" and report.total_usd == Decimal("2.00")
    lines = sorted(report.lines.values_list("kind", "deployment_name", "requests", "cost_picos", "amount_usd"))
    tasks.refresh_billing_reports.apply().get()  # again: the same report
    assert sorted(report.lines.values_list("kind", "deployment_name", "requests", "cost_picos", "amount_usd")) == lines
    assert BillingReport.objects.get(pk=report.pk).total_usd == Decimal("2.00")
