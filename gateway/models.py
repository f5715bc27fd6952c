"""The gateway process's own tables: per-minute rate counters (the database limiter)
and the configuration version its caches watch (see gateway.freshness)."""
from __future__ import annotations

from django.db import models

class RateCounter(models.Model):
    """Requests and tokens of one rate-limited scope in one minute (the database
    limiter; with Redis the counters live there)."""

    scope = models.CharField(max_length=250)
    minute = models.BigIntegerField(help_text="minutes since the epoch (UTC)")
    requests = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "minute"], name="uniq_rate_counter")]
        indexes = [models.Index(fields=["minute"], name="rate_counter_minute_idx")]


class ConfigVersion(models.Model):
    """One row whose number goes up whenever a key, org, deployment, credential,
    route, policy, budget or rate card is written (database triggers, gateway.triggers,
    installed by migration 0008; see gateway.freshness). Gateway processes read it a few times a second and keep
    their caches while it is unchanged: no database work on the request path."""

    version = models.BigIntegerField(default=0)
