"""Organizations, their members, their API keys, and the append-only audit log."""
from __future__ import annotations

import functools
import uuid
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from tenants.keys import display_prefix


def validate_time_zone(value: str) -> None:
    """An IANA time zone name this installation knows (zoneinfo)."""
    if value not in available_time_zones():
        raise ValidationError("%(value)s is not a known time zone (an IANA name such as Europe/Paris).",
                              code="invalid_time_zone", params={"value": value})


@functools.cache
def available_time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class Organization(models.Model):
    class Tier(models.TextChoices):
        FREE = "free", "Free"
        PRO = "pro", "Pro"
        ENTERPRISE = "enterprise", "Enterprise"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.FREE)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Privacy: prompt and completion text are not stored unless the org opts in.
    store_prompts = models.BooleanField(default=False)
    budget_in_protocol = models.BooleanField(
        default=False, help_text="tell clients their remaining budget in auth_ok and llm_response_end")
    # Token control (docs/token-control.md).
    max_tokens_per_request = models.PositiveIntegerField(
        null=True, blank=True, help_text="cap on any request's output tokens (max_tokens is clamped to it)")
    max_input_tokens = models.PositiveIntegerField(
        null=True, blank=True, help_text="longer prompts are truncated (system prompt and newest turns kept)")
    end_user_rpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="requests per minute for each end user (metadata.user_id)")
    end_user_tpm_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="tokens per minute for each end user (metadata.user_id)")
    # Budget notifications: also POSTed here, signed (docs/token-control.md).
    webhook_url = models.URLField(blank=True, help_text="https URL for budget notifications (optional)")
    webhook_secret = models.CharField(max_length=64, blank=True, editable=False,
                                      help_text="HMAC key of the X-OpenClaw-Signature header")
    # Analytics (the usage page's periods and day buckets) are shown in this zone;
    # billing months stay UTC.
    time_zone = models.CharField(max_length=64, default="UTC", validators=[validate_time_zone],
                                 help_text="IANA time zone the usage page shows days in, e.g. Europe/Paris")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]

    def save(self, *args, **kwargs):
        if self.webhook_url and not self.webhook_secret:
            import secrets

            self.webhook_secret = secrets.token_urlsafe(32)
        super().save(*args, **kwargs)

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        AUDITOR = "auditor", "Auditor"
        MEMBER = "member", "Member"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "user"], name="uniq_membership_org_user")]

    def __str__(self) -> str:
        return f"{self.user} in {self.org} ({self.role})"


class ApiKey(models.Model):
    """A tenant application's credential. Only a digest of the secret is kept."""

    class Kind(models.TextChoices):
        APPLICATION = "application", "Application"
        # Short-lived, one per user and org, made for the dashboard's playground: hidden
        # from the key list, purged after it expires (tenants/playground_keys.py).
        PLAYGROUND = "playground", "Playground"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200)
    # Unique lookup id embedded in the key: the one query authentication makes.
    lookup = models.CharField(max_length=16, unique=True, editable=False)
    digest = models.CharField(max_length=64, editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    # Names (models or routes) this key may request, as the client sends them.
    # Empty means every name the org can resolve.
    allowed_models = models.JSONField(default=list, blank=True)
    max_tokens_per_request = models.PositiveIntegerField(null=True, blank=True)
    rpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="requests per minute for this key")
    tpm_limit = models.PositiveIntegerField(null=True, blank=True, help_text="tokens per minute for this key")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.APPLICATION, editable=False)
    # Rotation: the key this one replaced (which keeps working until its overlap ends).
    rotated_from = models.OneToOneField("self", null=True, blank=True, on_delete=models.SET_NULL,
                                        related_name="rotated_to", editable=False)

    class Meta:
        verbose_name = "API key"
        indexes = [
            # The key list: an org's keys of one kind, newest first.
            models.Index(fields=["org", "kind", "-created_at"], name="apikey_org_kind_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=~models.Q(digest=""), name="apikey_digest_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.display} ({self.name})"

    @property
    def display(self) -> str:
        return f"{display_prefix(self.lookup)}…{self.last_four}"

    @property
    def prefix(self) -> str:
        return display_prefix(self.lookup)

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


class AuditEvent(models.Model):
    """One append-only audit entry.

    Events form hash chains, one per org (and one for platform events): each
    event's hash covers its content and the previous event's hash, so an edited
    or deleted row breaks verification (`tenants.audit.verify_chain`). The
    (chain, seq) unique constraint makes two concurrent writers conflict rather
    than fork the chain.
    """

    class ActorType(models.TextChoices):
        USER = "user", "User"
        API_KEY = "api_key", "API key"
        SYSTEM = "system", "System"
        ANONYMOUS = "anonymous", "Anonymous"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.PROTECT, related_name="audit_events"
    )
    chain = models.CharField(max_length=64, editable=False)
    seq = models.PositiveBigIntegerField(editable=False)
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    prev_hash = models.CharField(max_length=64, editable=False)
    hash = models.CharField(max_length=64, editable=False)

    class Meta:
        ordering = ["chain", "seq"]
        constraints = [models.UniqueConstraint(fields=["chain", "seq"], name="uniq_audit_chain_seq")]
        indexes = [
            # The auditor's view: an org's events, newest first.
            models.Index(fields=["org", "-created_at"], name="audit_org_created_idx"),
            # The audit log's filters (tenants/audit_log.py), within the org's chain, newest
            # first: events about one target (an API key's history) and one actor's events.
            models.Index(fields=["chain", "target_type", "target_id", "-seq"], name="audit_chain_target_idx"),
            models.Index(fields=["chain", "actor", "-seq"], name="audit_chain_actor_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.action} by {self.actor or self.actor_type}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("audit events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("audit events are append-only")


class AuditVerification(models.Model):
    """One check of an org's audit chain, run in the background (tenants/audit.py
    `audit_chain_verify`), with its progress saved after every batch."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        OK = "ok", "Intact"
        BROKEN = "broken", "Broken"
        FAILED = "failed", "Could not finish"

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    org = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="audit_verifications")
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    # Progress: events checked so far (the chain is intact up to seq == checked), of
    # `total` events in the chain when the check started.
    checked = models.PositiveBigIntegerField(default=0)
    total = models.PositiveBigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, blank=True, editable=False,
                                 help_text="hash of the last event checked: where the next batch resumes")
    first_broken_seq = models.PositiveBigIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The verification page: an org's latest checks.
            models.Index(fields=["org", "-started_at"], name="audit_verify_org_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.org} audit chain check {self.status} ({self.checked}/{self.total})"

    @property
    def is_running(self) -> bool:
        return self.status == self.Status.RUNNING
