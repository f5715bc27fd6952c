"""The model catalogue: upstream models the gateway can call, the credentials to call
them with, the routes that choose among them and each org's routing policy.

The tables keep the names they were created with (`gateway_*`): the models moved
here from the gateway app without a database change (migration catalog 0001)."""
from __future__ import annotations

import uuid
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from catalog.crypto import decrypt_secret, encrypt_secret
from tenants.models import Organization

PRICE_FIELD = dict(max_digits=14, decimal_places=6, validators=[MinValueValidator(Decimal("0"))])


class ProviderCredential(models.Model):
    """An upstream API key, encrypted at rest. Owned by the platform (org empty) or one org."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="credentials")
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=50, help_text="e.g. openai, anthropic, mock")
    encrypted_secret = models.TextField(editable=False)
    last_four = models.CharField(max_length=4, editable=False, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "gateway_providercredential"
        constraints = [
            models.UniqueConstraint(fields=["name"], condition=Q(org__isnull=True), name="uniq_platform_credential_name"),
            models.UniqueConstraint(fields=["org", "name"], condition=Q(org__isnull=False), name="uniq_org_credential_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider}, …{self.last_four})"

    def set_secret(self, plaintext: str) -> None:
        self.encrypted_secret = encrypt_secret(plaintext)
        self.last_four = plaintext[-4:] if len(plaintext) >= 8 else ""

    def get_secret(self) -> str:
        return decrypt_secret(self.encrypted_secret)


class Deployment(models.Model):
    """One callable upstream model: a litellm model string at an endpoint, with prices.

    `name` is what clients put in `llm_request.model`; it resolves org first,
    then platform (docs/architecture.md, "Name resolution").
    """

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments")
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=50, help_text="shown to clients in route.provider, e.g. openai, mock")
    litellm_model = models.CharField(max_length=200, help_text="litellm model string, e.g. openai/gpt-4o")
    api_base = models.URLField(blank=True)
    credential = models.ForeignKey(ProviderCredential, null=True, blank=True, on_delete=models.PROTECT)
    extra_params = models.JSONField(default=dict, blank=True, help_text="extra keyword arguments for litellm")
    input_price_per_mtok = models.DecimalField(
        **PRICE_FIELD, null=True, blank=True,
        help_text="USD per million input tokens; empty: litellm's price map for the model")
    output_price_per_mtok = models.DecimalField(
        **PRICE_FIELD, null=True, blank=True,
        help_text="USD per million output tokens; empty: litellm's price map for the model")
    context_window = models.PositiveIntegerField(default=8192)
    max_output_tokens = models.PositiveIntegerField(default=4096)
    tags = models.JSONField(default=list, blank=True, help_text='capability tags, e.g. ["legal", "vision"]')
    region = models.CharField(max_length=50, blank=True)
    # The provider's quota, as routing should respect it (per gateway process).
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="requests per minute")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="tokens per minute")
    max_concurrency = models.PositiveIntegerField(null=True, blank=True, help_text="requests in flight")
    weight = models.PositiveIntegerField(default=1)
    enabled = models.BooleanField(default=True)
    connect_timeout_ms = models.PositiveIntegerField(default=5_000)
    first_token_timeout_ms = models.PositiveIntegerField(default=30_000)
    idle_timeout_ms = models.PositiveIntegerField(default=30_000)
    total_timeout_ms = models.PositiveIntegerField(default=600_000)
    lean_stream = models.BooleanField(
        default=True, help_text="read the provider's stream without litellm's per-chunk wrapper when it speaks "
                                "OpenAI's streaming format (openai/... models); off: always through litellm")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "gateway_deployment"
        constraints = [
            # Name resolution looks up (org, name) then (platform, name).
            models.UniqueConstraint(fields=["name"], condition=Q(org__isnull=True), name="uniq_platform_deployment_name"),
            models.UniqueConstraint(fields=["org", "name"], condition=Q(org__isnull=False), name="uniq_org_deployment_name"),
            models.CheckConstraint(condition=Q(max_output_tokens__gt=0), name="deployment_max_output_positive"),
            models.CheckConstraint(condition=Q(context_window__gt=0), name="deployment_context_positive"),
            models.CheckConstraint(condition=Q(input_price_per_mtok__gte=0) & Q(output_price_per_mtok__gte=0),
                                   name="deployment_prices_not_negative"),
        ]

    def __str__(self) -> str:
        owner = self.org.slug if self.org_id else "platform"
        return f"{self.name} ({owner})"

    def clean(self):
        from django.core.exceptions import ValidationError

        from catalog.pricing import PricingError, base_prices

        if (self.input_price_per_mtok is None) != (self.output_price_per_mtok is None):
            raise ValidationError("set both prices, or neither to use litellm's price map")
        if self.input_price_per_mtok is None and self.litellm_model:
            try:
                base_prices(self)
            except PricingError as exc:
                raise ValidationError({"input_price_per_mtok": str(exc)}) from None


class Route(models.Model):
    """An alias (e.g. best_available_general) that picks one of its candidate
    deployments per request by a strategy, falling back to the others before
    the first token. Owned by the platform (org empty) or one org."""

    class Strategy(models.TextChoices):
        COST = "cost", "Cheapest healthy candidate"
        LATENCY = "latency", "Lowest time to first token"
        CAPABILITY = "capability", "Candidates with the required tags, in order"
        WEIGHTED = "weighted", "Weighted random"
        LEAST_BUSY = "least_busy", "Fewest requests in flight"
        FALLBACK = "fallback", "Explicit order"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="routes")
    alias = models.CharField(max_length=100, help_text="the name clients send as llm_request.model")
    strategy = models.CharField(max_length=20, choices=Strategy.choices, default=Strategy.FALLBACK)
    required_tags = models.JSONField(default=list, blank=True, help_text="candidates must carry all of these tags")
    min_context_window = models.PositiveIntegerField(null=True, blank=True)
    region = models.CharField(max_length=50, blank=True, help_text="if set, only candidates in this region")
    max_attempts = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1)], help_text="deployments tried before the first token, at most"
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "gateway_route"
        constraints = [
            # Name resolution looks up (org, alias) then (platform, alias).
            models.UniqueConstraint(fields=["alias"], condition=Q(org__isnull=True), name="uniq_platform_route_alias"),
            models.UniqueConstraint(fields=["org", "alias"], condition=Q(org__isnull=False), name="uniq_org_route_alias"),
            models.CheckConstraint(condition=Q(max_attempts__gte=1) & Q(max_attempts__lte=10),
                                   name="route_attempts_1_to_10"),
        ]

    def __str__(self) -> str:
        owner = self.org.slug if self.org_id else "platform"
        return f"{self.alias} ({owner}, {self.strategy})"

    def clean(self):
        from django.core.exceptions import ValidationError

        if not isinstance(self.required_tags, list) or not all(isinstance(t, str) for t in self.required_tags):
            raise ValidationError({"required_tags": "a list of tag strings, e.g. [\"legal\"]"})


class RouteCandidate(models.Model):
    """One deployment a route may use. Candidates are deployments, never other
    routes, so fallback chains cannot form cycles."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="candidates")
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="route_candidacies")
    weight = models.PositiveIntegerField(default=1, help_text="share of traffic for the weighted strategy")
    position = models.PositiveSmallIntegerField(default=0, help_text="fallback order: lower first")

    class Meta:
        db_table = "gateway_routecandidate"
        ordering = ["position", "id"]
        constraints = [models.UniqueConstraint(fields=["route", "deployment"], name="uniq_route_candidate")]

    def __str__(self) -> str:
        return f"{self.route.alias} -> {self.deployment.name}"

    def clean(self):
        from django.core.exceptions import ValidationError

        if not self.route_id or not self.deployment_id:
            return
        if self.deployment.org_id is not None and self.deployment.org_id != self.route.org_id:
            raise ValidationError({"deployment": "a route may use only its own org's or platform deployments"})


class RoutingPolicy(models.Model):
    """An ordered rule set (docs/routing-rules.md) that picks the route, deployment
    or strategy for a request. One per org, plus one for the platform; the org's
    rules are tried first. Edits take effect within a second, without restart."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.OneToOneField(Organization, null=True, blank=True, on_delete=models.PROTECT,
                               related_name="routing_policy")
    rules = models.JSONField(default=list, blank=True, help_text="an ordered list of rules: see docs/routing-rules.md")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "gateway_routingpolicy"
        verbose_name_plural = "routing policies"
        constraints = [
            models.UniqueConstraint(fields=["org"], condition=Q(org__isnull=True), name="uniq_platform_policy"),
        ]

    def __str__(self) -> str:
        return f"routing policy of {self.org.slug if self.org_id else 'the platform'}"

    def clean(self):
        from django.core.exceptions import ValidationError

        from catalog.rules import validate_rules

        problems = validate_rules(self.rules)
        if not problems:
            problems = self._unknown_targets()
        if problems:
            raise ValidationError({"rules": problems})

    def _unknown_targets(self) -> list[str]:
        """Rules may only name routes and deployments this policy's org can resolve."""
        owners = Q(org__isnull=True) | (Q(org_id=self.org_id) if self.org_id else Q(pk__in=[]))
        problems = []
        for index, rule in enumerate(self.rules):
            then = rule.get("then", {})
            for kind, model in (("route", Route), ("deployment", Deployment)):
                name = then.get(kind)
                if name is None:
                    continue
                lookup = {"alias": name} if kind == "route" else {"name": name}
                if not model.objects.filter(owners, **lookup).exists():
                    problems.append(f"rules[{index}].then.{kind}: no {kind} named {name!r} for this organization")
        return problems
