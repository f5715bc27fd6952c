"""Reads of usage for the dashboard: every figure the overview shows comes from here.

Costs are summed exactly on both databases, as integer pico-dollars (billing/sums.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import BigIntegerField, Count, F, Q, Sum, Value
from django.db.models.functions import Coalesce, NullIf

from billing.models import Budget, UsageRecord
from billing.sums import cost_picos as _cost_picos, usd_from_picos as _usd
from tenants.models import Organization

Status = UsageRecord.Status
# Requests that ended in an error (the gateway's, upstream's, or a refusal before upstream).
ERROR_STATUSES = (Status.UPSTREAM_ERROR, Status.UPSTREAM_TIMEOUT, Status.REJECTED, Status.INTERNAL_ERROR,
                  Status.GATEWAY_LOST)
# Requests the client ended.
CANCELLED_STATUSES = (Status.CANCELLED, Status.CLIENT_GONE)


@dataclass(frozen=True)
class UsageFigures:
    requests: int
    errors: int
    cancelled: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ModelUsage:
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _usage(org: Organization, start: datetime, end: datetime):
    # Index usage_org_started_idx (org, started_at) serves this range.
    return UsageRecord.objects.filter(org=org, started_at__gte=start, started_at__lt=end)


def usage_figures(*, org: Organization, start: datetime, end: datetime) -> UsageFigures:
    """Requests, errors, cancellations, tokens and exact cost of `org` started in [start, end)."""
    row = _usage(org, start, end).aggregate(
        requests=Count("pk"),
        errors=Count("pk", filter=Q(status__in=ERROR_STATUSES)),
        cancelled=Count("pk", filter=Q(status__in=CANCELLED_STATUSES)),
        prompt_tokens=Sum("prompt_tokens"),
        completion_tokens=Sum("completion_tokens"),
        cost_picos=Sum(_cost_picos(), output_field=BigIntegerField()),
    )
    return UsageFigures(requests=row["requests"], errors=row["errors"], cancelled=row["cancelled"],
                        prompt_tokens=int(row["prompt_tokens"] or 0),
                        completion_tokens=int(row["completion_tokens"] or 0), cost_usd=_usd(row["cost_picos"]))


def top_models(*, org: Organization, start: datetime, end: datetime, limit: int = 5) -> list[ModelUsage]:
    """The models `org` used most in [start, end): by requests, then cost.

    A request is counted under the deployment that served it, or under the model it
    asked for when none did (refused before upstream)."""
    rows = (_usage(org, start, end)
            .annotate(model=Coalesce(NullIf(F("deployment_name"), Value("")), F("requested_model")))
            .values("model")
            .annotate(requests=Count("pk"), prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"),
                      cost_picos=Sum(_cost_picos(), output_field=BigIntegerField()))
            .order_by("-requests", "-cost_picos", "model")[:limit])
    return [ModelUsage(model=row["model"], requests=row["requests"], prompt_tokens=int(row["prompt"] or 0),
                       completion_tokens=int(row["completion"] or 0), cost_usd=_usd(row["cost_picos"]))
            for row in rows]


def org_budgets(*, org: Organization) -> list[Budget]:
    """The org's budgets, enabled first, for the overview's budget panel."""
    return list(Budget.objects.filter(org=org).select_related("api_key", "route", "deployment")
                .order_by("-enabled", "name"))
