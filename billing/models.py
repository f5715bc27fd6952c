"""Usage records (one per request) and their daily rollups."""
from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from billing.money import COST_FIELD, PRICE_PLACES
from gateway.models import Deployment
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
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.status} {self.cost_usd}"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageDailyRollup(models.Model):
    """Per org, API key and deployment, one UTC day. Rebuilt idempotently by a Celery task."""

    org = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+")
    deployment_name = models.CharField(max_length=100, blank=True)
    day = models.DateField()
    requests = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(**COST_FIELD, default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "api_key", "deployment_name", "day"], name="uniq_rollup_scope_day"),
        ]
