"""Usage records (one per request), their hourly and daily rollups, budgets with their
counters and reservation leases, and org rate cards."""
from __future__ import annotations

import uuid

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from catalog.models import Deployment, Route
from catalog.money import COST_FIELD, COST_PLACES, PRICE_PLACES
from tenants.models import ApiKey, Organization

_PRICE = dict(max_digits=14, decimal_places=PRICE_PLACES)


class UsageRecord(models.Model):
    """Everything billing needs about one request, written once when it ends."""

    class Status(models.TextChoices):
        COMPLETED = "completed", "Completed"
        LENGTH = "length", "Stopped at max_tokens"
        CANCELLED = "cancelled", "Cancelled by client"
        CLIENT_GONE = "client_gone", "Client disconnected"
        UPSTREAM_ERROR = "upstream_error", "Upstream error"
        UPSTREAM_TIMEOUT = "upstream_timeout", "Upstream timeout"
        REJECTED = "rejected", "Rejected before upstream"
        INTERNAL_ERROR = "internal_error", "Internal error"
        GATEWAY_LOST = "gateway_lost", "Gateway process lost mid-request (settled from its checkpoint)"

    class TokenSource(models.TextChoices):
        PROVIDER = "provider", "Reported by the provider"
        COUNTED = "counted", "Counted by the gateway"
        NONE = "none", "No tokens"

    # The request's UUID: also the key of its budget reservation (idempotent writes).
    request_id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    client_request_id = models.CharField(max_length=128, blank=True)
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="usage_records")
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="usage_records")
    end_user = models.CharField(max_length=200, blank=True)
    requested_model = models.CharField(max_length=200)
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    deployment_name = models.CharField(max_length=100, blank=True)
    provider = models.CharField(max_length=50, blank=True)
    provider_response_id = models.CharField(max_length=200, blank=True)
    route = models.JSONField(default=dict, blank=True)
    # The route the request was served through (budgets filtered to a route match on it).
    via_route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=Status.choices)
    finish_reason = models.CharField(max_length=20, blank=True)
    error_code = models.PositiveSmallIntegerField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    prompt_tokens_source = models.CharField(max_length=10, choices=TokenSource.choices, default=TokenSource.NONE)
    completion_tokens_source = models.CharField(max_length=10, choices=TokenSource.choices, default=TokenSource.NONE)
    input_price_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)
    output_price_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)
    cost_usd = models.DecimalField(**COST_FIELD, default=0)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    total_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # Billing reports and rollups: an org's usage over a period.
            models.Index(fields=["org", "started_at"], name="usage_org_started_idx"),
            # Daily rollup scans one day across orgs.
            models.Index(fields=["started_at"], name="usage_started_idx"),
            # The request log (billing/request_log.py): an org's records newest first,
            # keyset-paginated on (started_at, request_id); one index per filter it offers.
            models.Index(fields=["org", "-started_at", "-request_id"], name="usage_log_org_idx"),
            models.Index(fields=["org", "api_key", "-started_at"], name="usage_log_key_idx"),
            models.Index(fields=["org", "requested_model", "-started_at"], name="usage_log_model_idx"),
            models.Index(fields=["org", "deployment_name", "-started_at"], name="usage_log_deployment_idx"),
            models.Index(fields=["org", "end_user", "-started_at"], name="usage_log_end_user_idx"),
            models.Index(fields=["org", "status", "-started_at"], name="usage_log_status_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.status} {self.cost_usd}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Requests that ended in an error (the gateway's, upstream's, or a refusal before upstream),
# and requests the client ended: the "errors" and "cancelled" every usage figure shows.
ERROR_STATUSES = (UsageRecord.Status.UPSTREAM_ERROR, UsageRecord.Status.UPSTREAM_TIMEOUT,
                  UsageRecord.Status.REJECTED, UsageRecord.Status.INTERNAL_ERROR, UsageRecord.Status.GATEWAY_LOST)
CANCELLED_STATUSES = (UsageRecord.Status.CANCELLED, UsageRecord.Status.CLIENT_GONE)


class UsageCounts(models.Model):
    """What every usage rollup sums; cost as an exact integer of pico-dollars (10^-12 USD:
    a DecimalField is a float on SQLite)."""

    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_picos = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_picos).scaleb(-COST_PLACES)


class UsageRollup(UsageCounts):
    """Usage of one UTC hour by every dimension a breakdown asks for (billing/rollups.py).

    One row per org, hour (the `started_at` hour of its records, an aware datetime at
    :00 UTC), API key, deployment (and its name: records refused before upstream have
    none), end user, requested model, route and status; errors and cancellations are
    statuses. Cost is an exact integer of pico-dollars (10^-12 USD, the places of
    catalog.money.COST_FIELD). Rows are never updated: `usage_rollup_hours` deletes an
    hour range and inserts it again from the usage records in one transaction, so the
    nullable deployment and route need no upsert; the unique index (NULLs folded to 0,
    which no id takes) turns a second writer racing the first into an error rather than
    a double count."""

    # The foreign keys are not database constraints and have no index of their own: the
    # rows are derived from usage records, whose own foreign keys already hold, and on
    # PostgreSQL checking and indexing ~4 references per row made a full rebuild of 1M
    # records 42 s instead of 18 s (docs/benchmarks.md, "Billing rollups"). Django still
    # enforces PROTECT; (org, hour) below serves every page's query.
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                            db_index=False)
    hour = models.DateTimeField()
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                                db_index=False)
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                   db_constraint=False, db_index=False)
    deployment_name = models.CharField(max_length=100, blank=True)
    end_user = models.CharField(max_length=200, blank=True)
    requested_model = models.CharField(max_length=200)
    via_route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                  db_constraint=False, db_index=False)
    status = models.CharField(max_length=20, choices=UsageRecord.Status.choices)
    # The prices applied (rate-card prices where one applied): a billing report has a line
    # per deployment and prices (billing/reports.py). None: refused before pricing.
    input_price_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)
    output_price_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)

    class Meta:
        constraints = [
            # Leads with the hour: the rebuild deletes an hour range across orgs, and the
            # daily rollup sums a day of hours. NULL prices fold to -1, which no price takes.
            models.UniqueConstraint(
                "hour", "org", "api_key", Coalesce("deployment", 0), "deployment_name", "end_user",
                "requested_model", Coalesce("via_route", 0), "status",
                Coalesce("input_price_per_mtok", Value(-1), output_field=models.DecimalField(**_PRICE)),
                Coalesce("output_price_per_mtok", Value(-1), output_field=models.DecimalField(**_PRICE)),
                name="uniq_usage_rollup_scope_price_hour",
            ),
        ]
        indexes = [
            # Breakdowns of one org over a period (by model, deployment, key, end user,
            # route, status; spend over time): WHERE org_id = ? AND hour >= ? AND hour < ?.
            models.Index(fields=["org", "hour"], name="usage_rollup_org_hour_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.org_id} {self.hour:%Y-%m-%d %H:00} {self.requests} requests"


class BillingReport(models.Model):
    """One org's bill for one calendar month (UTC), built from the hourly usage rollups by
    billing/reports.py: a draft while the month is open and its grace window runs, then
    final, after which nothing changes it (late usage goes on the next report as
    adjustment lines). docs/billing.md says how totals are rounded."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        FINAL = "final", "Final"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="billing_reports")
    month = models.DateField(help_text="the first day of the month (UTC)")
    status = models.CharField(max_length=5, choices=Status.choices, default=Status.DRAFT)
    # The month's own usage, exact (equal to the raw usage sums of the month when built).
    requests = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_picos = models.BigIntegerField(default=0)
    # What the invoice asks: the sum of the rounded amounts of the deployment and
    # adjustment lines (catalog.money.invoice_amount).
    total_usd = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal("0.00"))
    built_at = models.DateTimeField(default=timezone.now)
    finalized_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "month"], name="uniq_billing_report_org_month"),
            models.CheckConstraint(condition=Q(status="draft", finalized_at__isnull=True)
                                   | Q(status="final", finalized_at__isnull=False),
                                   name="billing_report_finalized_when_final"),
        ]
        indexes = [
            # reports_refresh: drafts due for finalisation (WHERE status = 'draft' AND month < ?).
            models.Index(fields=["status", "month"], name="billing_report_status_idx"),
        ]
        ordering = ["-month"]

    def __str__(self) -> str:
        return f"{self.org_id} {self.month:%Y-%m} {self.status}"

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_picos).scaleb(-COST_PLACES)

    @property
    def is_final(self) -> bool:
        return self.status == self.Status.FINAL


class BillingReportLine(models.Model):
    """One row of a report: a deployment at the prices applied (billed), an API key's or
    an end user's subtotal (the same usage seen another way, not added to the total), or
    an adjustment (late usage of an earlier, final month; billed). Counts may be negative
    on an adjustment only."""

    class Kind(models.TextChoices):
        DEPLOYMENT = "deployment", "Deployment"
        API_KEY = "api_key", "API key subtotal"
        END_USER = "end_user", "End-user subtotal"
        ADJUSTMENT = "adjustment", "Adjustment"

    BILLED_KINDS = (Kind.DEPLOYMENT, Kind.ADJUSTMENT)

    report = models.ForeignKey(BillingReport, on_delete=models.CASCADE, related_name="lines")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    deployment_name = models.CharField(max_length=100, blank=True)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    end_user = models.CharField(max_length=200, blank=True)
    input_price_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)
    output_price_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cost_picos = models.BigIntegerField(default=0)
    amount_usd = models.DecimalField(max_digits=18, decimal_places=2, default=Decimal("0.00"))
    usage_month = models.DateField(null=True, blank=True, help_text="adjustments: the month the usage belongs to")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(kind="adjustment") | Q(usage_month__isnull=True),
                                   name="billing_line_usage_month_adjustment_only"),
        ]
        indexes = [
            # What final reports billed for a month (adjustments): WHERE kind = ? AND usage_month = ?.
            models.Index(fields=["kind", "usage_month"], name="billing_line_kind_month_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.deployment_name or self.end_user or self.api_key_id} {self.amount_usd}"

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_picos).scaleb(-COST_PLACES)


class UsageDailyRollup(UsageCounts):
    """Per org, API key and deployment, one UTC day: the sum of that day's hourly
    rollups, rebuilt with them in the same transaction (billing/rollups.py)."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+")
    deployment_name = models.CharField(max_length=100, blank=True)
    day = models.DateField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "api_key", "deployment_name", "day"], name="uniq_rollup_scope_day"),
        ]


class UsageSums(UsageCounts):
    """The counts with errors and cancellations apart (the tables the dashboard reads,
    whose rows mix statuses)."""

    errors = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)

    class Meta:
        abstract = True


class UsageHourTotal(UsageSums):
    """One org's usage in one UTC hour, every dimension summed: the usage page's figures
    and chart read ~720 of these for a month instead of the detailed hourly rollups
    (which barely compress: docs/benchmarks.md, "Billing rollups"). Rebuilt from the
    hourly rollups in the same transaction (billing/rollups.py)."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                            db_index=False)
    hour = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "hour"], name="uniq_usage_hour_total")]


class UsageDayFacet(UsageSums):
    """One org's usage in one UTC day for one value of one breakdown (a model, an API key,
    an end user, a route): the usage page's breakdowns read these for the whole days of a
    period and the detailed hourly rollups only for its partial days. Rebuilt from the
    hourly rollups in the same transaction (billing/rollups.py)."""

    class Facet(models.TextChoices):
        MODEL = "model", "Model"  # value: the deployment that served, else the model asked for
        KEY = "key", "API key"  # value: the API key's id
        END_USER = "end_user", "End user"  # value: metadata.user_id, "" for none
        ROUTE = "route", "Route"  # value: the route's id, "" for a model asked for directly

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+", db_constraint=False,
                            db_index=False)
    facet = models.CharField(max_length=10, choices=Facet.choices)
    day = models.DateField()
    value = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            # Serves WHERE org_id = ? AND facet = ? AND day >= ? AND day < ?.
            models.UniqueConstraint(fields=["org", "facet", "day", "value"], name="uniq_usage_day_facet"),
        ]


class RollupProgress(models.Model):
    """One row: `rolled_up_before` — every hour before it was rebuilt after it had ended,
    by runs that left no gap (billing/rollups.py). Figures read rollups before it and the
    usage records themselves from it on (billing/selectors.py), so they are never behind."""

    rolled_up_before = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "rollup progress"


class Budget(models.Model):
    """A spending limit for an org, one of its keys, or each of its end users, over a
    calendar window (UTC), optionally only for one route or deployment."""

    class Scope(models.TextChoices):
        ORG = "org", "The whole organization"
        KEY = "key", "One API key"
        END_USER = "end_user", "Each end user (metadata.user_id)"

    class Window(models.TextChoices):
        HOUR = "hour", "Hour"
        DAY = "day", "Day"
        MONTH = "month", "Month"
        LIFETIME = "lifetime", "Lifetime"

    class HardAction(models.TextChoices):
        BLOCK = "block", "Refuse with 402"
        FALLBACK = "fallback", "Serve through the fallback route"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="budgets")
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=10, choices=Scope.choices, default=Scope.ORG)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.CASCADE, related_name="budgets",
                                help_text="the key, for a key budget")
    window = models.CharField(max_length=10, choices=Window.choices, default=Window.MONTH)
    limit_usd = models.DecimalField(max_digits=19, decimal_places=9, null=True, blank=True,
                                    validators=[MinValueValidator(Decimal("0.000000001"))],
                                    help_text="hard limit in USD (exact to the nano-dollar)")
    limit_tokens = models.PositiveBigIntegerField(null=True, blank=True, validators=[MinValueValidator(1)],
                                                  help_text="hard limit in tokens (prompt + completion)")
    route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.PROTECT, related_name="budgets",
                              help_text="count only requests served through this route")
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="budgets", help_text="count only requests served by this deployment")
    soft_threshold_percent = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="percentage of the limit at which the org is notified")
    throttle_rpm = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)],
        help_text="past the soft threshold, at most this many requests per minute in the budget's scope")
    hard_action = models.CharField(max_length=10, choices=HardAction.choices, default=HardAction.BLOCK)
    fallback_route = models.ForeignKey(Route, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                       help_text="where requests go once a filtered budget is used up")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(limit_usd__isnull=False) | Q(limit_tokens__isnull=False),
                                   name="budget_has_a_limit"),
            models.CheckConstraint(condition=Q(route__isnull=True) | Q(deployment__isnull=True),
                                   name="budget_one_filter"),
            models.CheckConstraint(condition=Q(limit_usd__isnull=True) | Q(limit_usd__gt=0),
                                   name="budget_usd_limit_positive"),
            models.CheckConstraint(condition=Q(limit_tokens__isnull=True) | Q(limit_tokens__gt=0),
                                   name="budget_token_limit_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_filtered(self) -> bool:
        return self.route_id is not None or self.deployment_id is not None

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.limit_usd is None and self.limit_tokens is None:
            errors["limit_usd"] = "set a dollar limit, a token limit, or both"
        if self.scope == self.Scope.KEY:
            if self.api_key_id is None:
                errors["api_key"] = "a key budget needs its key"
            elif self.org_id and self.api_key.org_id != self.org_id:
                errors["api_key"] = "the key belongs to another organization"
        elif self.api_key_id is not None:
            errors["api_key"] = "only a key budget names a key"
        if self.route_id and self.deployment_id:
            errors["deployment"] = "filter on a route or a deployment, not both"
        for field in ("route", "deployment", "fallback_route"):
            obj = getattr(self, field)
            if obj is not None and obj.org_id not in (None, self.org_id):
                errors[field] = "belongs to another organization"
        if self.hard_action == self.HardAction.FALLBACK:
            if not self.is_filtered:
                errors["hard_action"] = ("only a budget filtered to a route or deployment can fall back; "
                                         "an unfiltered budget at its limit must block")
            elif self.fallback_route_id is None:
                errors["fallback_route"] = "choose the route to fall back to"
            elif self.fallback_route_id == self.route_id:
                errors["fallback_route"] = "a budget cannot fall back to the route it limits"
            elif (cycle := self._fallback_cycle()) is not None:
                errors["fallback_route"] = "fallback cycle: " + " -> ".join(cycle)
        elif self.fallback_route_id is not None:
            errors["fallback_route"] = "a fallback route is used only with the fallback action"
        if errors:
            raise ValidationError(errors)

    def _fallback_cycle(self) -> list[str] | None:
        """Route aliases of a cycle this budget's fallback would close, else None.

        Each enabled route-filtered fallback budget of the org is an edge from its
        route to its fallback route; following edges from the fallback route must
        never lead back to this budget's route."""
        if self.route_id is None or not self.org_id:
            return None
        edges: dict[int, set[int]] = {}
        others = Budget.objects.filter(org_id=self.org_id, enabled=True, hard_action=self.HardAction.FALLBACK,
                                       route__isnull=False).exclude(pk=self.pk)
        for other in others.values_list("route_id", "fallback_route_id"):
            edges.setdefault(other[0], set()).add(other[1])
        edges.setdefault(self.route_id, set()).add(self.fallback_route_id)
        path = [self.route_id]

        def walk(node: int, seen: list[int]) -> list[int] | None:
            for nxt in sorted(edges.get(node, ())):
                if nxt == self.route_id:
                    return seen + [nxt]
                if nxt not in seen:
                    found = walk(nxt, seen + [nxt])
                    if found:
                        return found
            return None

        cycle = walk(self.route_id, path)
        if cycle is None:
            return None
        aliases = dict(Route.objects.filter(pk__in=cycle).values_list("pk", "alias"))
        return [aliases.get(pk, str(pk)) for pk in cycle]


class BudgetNotice(models.Model):
    """A notification sent for a budget: one per budget, end user, window and kind
    (the unique constraint is what makes it exactly one)."""

    class Kind(models.TextChoices):
        SOFT = "soft", "Soft threshold crossed"
        HARD = "hard", "Hard limit reached"

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="notices")
    subject = models.CharField(max_length=200, blank=True)
    window_start = models.DateTimeField()
    kind = models.CharField(max_length=4, choices=Kind.choices)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    email_sent_at = models.DateTimeField(null=True, blank=True)
    webhook_delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget", "subject", "window_start", "kind"], name="uniq_budget_notice"),
        ]


class BudgetCounter(models.Model):
    """Spend and open reservations of one budget, one window (and one end user for
    per-user budgets), in integer nano-dollars and tokens. The database ledger's
    truth; with Redis, counters live there and are rebuilt from usage records."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="counters")
    subject = models.CharField(max_length=200, blank=True, help_text="the end user, for per-user budgets")
    window_start = models.DateTimeField()
    spent_nanos = models.BigIntegerField(default=0)
    spent_tokens = models.BigIntegerField(default=0)
    reserved_nanos = models.BigIntegerField(default=0)
    reserved_tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["budget", "subject", "window_start"], name="uniq_budget_counter"),
        ]


class BudgetLease(models.Model):
    """An open reservation (database ledger): what a request holds against its
    budgets, until it settles or, if its process dies, until the lease expires and
    it is settled from its checkpoint."""

    request_id = models.UUIDField(primary_key=True)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    expires_at = models.DateTimeField(db_index=True)
    completion_tokens = models.PositiveIntegerField(default=0, help_text="checkpoint: tokens received so far")
    payload = models.JSONField(help_text="the counters held and what is needed to bill the request")


class RateCard(models.Model):
    """One line of an org's rate card: explicit prices for a deployment, or a
    multiplier on the deployment's prices (for one deployment or, with no
    deployment, for all of them). A deployment's own line beats the org-wide one."""

    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="rate_cards")
    deployment = models.ForeignKey(Deployment, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                   help_text="empty: applies to every deployment without its own line")
    multiplier = models.DecimalField(max_digits=9, decimal_places=4, null=True, blank=True,
                                     validators=[MinValueValidator(Decimal("0"))])
    input_price_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True,
                                               validators=[MinValueValidator(Decimal("0"))])
    output_price_per_mtok = models.DecimalField(**_PRICE, null=True, blank=True,
                                                validators=[MinValueValidator(Decimal("0"))])
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "deployment"], name="uniq_rate_card_deployment",
                                    condition=Q(deployment__isnull=False)),
            models.UniqueConstraint(fields=["org"], name="uniq_rate_card_org_wide",
                                    condition=Q(deployment__isnull=True)),
        ]

    def clean(self) -> None:
        explicit = (self.input_price_per_mtok, self.output_price_per_mtok)
        if self.multiplier is not None and any(p is not None for p in explicit):
            raise ValidationError("give a multiplier or explicit prices, not both")
        if self.multiplier is None:
            if any(p is None for p in explicit):
                raise ValidationError("give a multiplier, or both input and output prices")
            if self.deployment_id is None:
                raise ValidationError({"deployment": "explicit prices need a deployment"})
        if self.deployment_id and self.deployment.org_id not in (None, self.org_id):
            raise ValidationError({"deployment": "belongs to another organization"})
