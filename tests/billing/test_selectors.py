"""Usage figures for the dashboard (billing/selectors.py): exact sums on both databases."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from billing.models import UsageRecord
from billing.selectors import top_models, usage_figures

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
END = datetime(2026, 12, 1, tzinfo=timezone.utc)


def records(org, api_key, count, **fields):
    defaults = dict(org=org, api_key=api_key, requested_model="mock-fast", deployment_name="mock-fast",
                    status="completed", started_at=START + timedelta(days=3))
    UsageRecord.objects.bulk_create([UsageRecord(**{**defaults, **fields}) for _ in range(count)])


@pytest.mark.parametrize("cost,total", [
    (Decimal("0.000000001"), Decimal("0.000001")),
    (Decimal("0.1"), Decimal("100")),
    (Decimal("0.000000000001"), Decimal("0.000000001")),
    (Decimal("1234.567890123456"), Decimal("1234567.890123456")),
])
def test_a_thousand_costs_add_up_exactly(org, issued_key, cost, total):
    records(org, issued_key.api_key, 1000, cost_usd=cost)
    figures = usage_figures(org=org, start=START, end=END)
    assert figures.cost_usd == total and isinstance(figures.cost_usd, Decimal)
    assert figures.requests == 1000
    assert top_models(org=org, start=START, end=END)[0].cost_usd == total


def test_figures_count_errors_cancellations_and_tokens_in_the_period_only(org, other_org, issued_key):
    key = issued_key.api_key
    records(org, key, 3, prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.25"))
    records(org, key, 2, status="upstream_error", cost_usd=Decimal("0"))
    records(org, key, 1, status="rejected")
    records(org, key, 1, status="cancelled", prompt_tokens=7, cost_usd=Decimal("0.01"))
    records(org, key, 4, started_at=END, cost_usd=Decimal("9"))  # next month: the end is excluded
    records(org, key, 4, started_at=START - timedelta(microseconds=1), cost_usd=Decimal("9"))
    figures = usage_figures(org=org, start=START, end=END)
    assert (figures.requests, figures.errors, figures.cancelled) == (7, 3, 1)
    assert (figures.prompt_tokens, figures.completion_tokens, figures.total_tokens) == (37, 15, 52)
    assert figures.cost_usd == Decimal("0.76")


def test_another_orgs_usage_is_not_counted(org, other_org, issued_key):
    from tenants.services import api_key_create

    other_key = api_key_create(org=other_org, name="theirs").api_key
    records(other_org, other_key, 5, cost_usd=Decimal("1"))
    assert usage_figures(org=org, start=START, end=END).requests == 0
    assert usage_figures(org=org, start=START, end=END).cost_usd == Decimal(0)
    assert top_models(org=org, start=START, end=END) == []


def test_top_models_rank_by_requests_and_name_the_serving_deployment(org, issued_key):
    key = issued_key.api_key
    records(org, key, 3, requested_model="best_available_general", deployment_name="gpt-4-turbo",
            prompt_tokens=100, completion_tokens=50, cost_usd=Decimal("0.0025"))
    records(org, key, 5, requested_model="claude-3-opus", deployment_name="claude-3-opus", cost_usd=Decimal("0.01"))
    records(org, key, 2, requested_model="no-such-model", deployment_name="", status="rejected")
    ranked = top_models(org=org, start=START, end=END, limit=2)
    assert [(m.model, m.requests) for m in ranked] == [("claude-3-opus", 5), ("gpt-4-turbo", 3)]
    assert (ranked[1].prompt_tokens, ranked[1].completion_tokens, ranked[1].total_tokens) == (300, 150, 450)
    assert ranked[1].cost_usd == Decimal("0.0075")
    assert [m.model for m in top_models(org=org, start=START, end=END)][-1] == "no-such-model"
