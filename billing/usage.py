"""The usage draft: one request's usage as the gateway gathers it, from the moment the
request is accepted (or refused) to the moment its usage record is written once,
by the usage recorder (billing/recorder.py) or, for a lost process, from its lease."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.utils import timezone

from billing.models import UsageRecord
from catalog.money import ZERO


@dataclass
class UsageDraft:
    """A request's usage as the gateway gathers it; written once when the request ends."""

    request_id: uuid.UUID
    client_request_id: str
    org_id: int
    api_key_id: int
    requested_model: str
    end_user: str = ""
    started_at: datetime = field(default_factory=timezone.now)
    status: str = UsageRecord.Status.INTERNAL_ERROR
    finish_reason: str = ""
    error_code: int | None = None
    deployment_id: int | None = None
    deployment_name: str = ""
    provider: str = ""
    provider_response_id: str = ""
    route: dict[str, Any] = field(default_factory=dict)
    via_route_id: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_source: str = UsageRecord.TokenSource.NONE
    completion_tokens_source: str = UsageRecord.TokenSource.NONE
    input_price_per_mtok: Decimal | None = None
    output_price_per_mtok: Decimal | None = None
    cost_usd: Decimal = ZERO
    max_tokens: int | None = None
    first_token_ms: int | None = None
    total_ms: int | None = None
    ended_at: datetime | None = None
    # The request's budget reservation (billing.budgets.Lease), settled when the
    # record is written; not a column.
    lease: Any = field(default=None, repr=False, compare=False)
