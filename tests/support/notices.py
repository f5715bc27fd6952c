"""Budget notices in tests (billing/notifications.py, billing/tasks.py): a monthly budget
of the `org`, its members (who gets the email and who does not), the webhook task
kept from running, and a notice sent as the gateway's task would."""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model

from billing import notifications, tasks
from billing.models import Budget
from tenants.models import AuditEvent, Membership
from tenants.services import user_membership_set

UTC = timezone.utc
WINDOW = datetime(2031, 5, 1, tzinfo=UTC)
FIGURES = {"budget": "monthly", "limit_usd": "20", "spent_usd": "16.2", "limit_tokens": None,
           "spent_tokens": 1234, "window_end": "2031-06-01T00:00:00Z", "percent": 81}


@pytest.fixture
def budget(org):
    return Budget.objects.create(org=org, name="monthly", window="month", limit_usd=Decimal("20"))


@pytest.fixture
def members(org):
    user_membership_set(org=org, username="olivia", role=Membership.Role.OWNER, email="olivia@acme.test")
    user_membership_set(org=org, username="adam", role=Membership.Role.ADMIN, email="adam@acme.test")
    user_membership_set(org=org, username="audrey", role=Membership.Role.AUDITOR, email="audrey@acme.test")
    user_membership_set(org=org, username="mel", role=Membership.Role.MEMBER, email="mel@acme.test")
    user_membership_set(org=org, username="noemail", role=Membership.Role.ADMIN, email="")
    user_membership_set(org=org, username="gone", role=Membership.Role.OWNER, email="gone@acme.test")
    get_user_model().objects.filter(username="gone").update(is_active=False)
    # The same address twice (another case) is one recipient.
    user_membership_set(org=org, username="olivia2", role=Membership.Role.ADMIN, email="OLIVIA@acme.test")


@pytest.fixture
def no_webhook_task(monkeypatch):
    """The webhook delivery task's hand-overs, recorded instead of queued."""
    calls = []
    monkeypatch.setattr(tasks.deliver_budget_webhook, "delay", lambda *a, **k: calls.append((a, k)))
    return calls


def send_notice(budget, *, kind="soft", window=WINDOW, subject="", owner=None, figures=FIGURES):
    """Send the budget's notice as the gateway's task does (a soft threshold in May 2031 by default)."""
    return notifications.send_budget_notice(budget_id=budget.pk, subject=subject, window_start=window, kind=kind,
                                            figures=figures, owner=owner)


def budget_events(org):
    """The org's budget audit events, in order."""
    return list(AuditEvent.objects.filter(org=org, action__startswith="budget.").order_by("seq"))
