"""Celery tasks: thin, idempotent, taking periods and ids rather than objects."""
from __future__ import annotations

import logging
import smtplib
from datetime import date

from celery import shared_task
from django.db import InterfaceError, OperationalError
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from billing import notifications
from billing.reconcile import billing_reconcile
from billing.reports import reports_refresh
from billing.rollups import usage_rollup_recent
from billing.services import usage_rollup_day
from billing.webhooks import WebhookFailed, WebhookRefused

logger = logging.getLogger(__name__)

# Worth another try: the database, the mail server or the broker was unreachable.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, smtplib.SMTPException, OSError, BrokerError)


@shared_task(name="billing.tasks.rollup_usage")
def rollup_usage() -> dict:
    """Beat, every USAGE_ROLLUP_INTERVAL_SECONDS: rebuild the open hour's usage rollups and
    every hour's back to the grace window (and their days). Returns the period and rows."""
    return usage_rollup_recent().as_dict()


@shared_task(name="billing.tasks.refresh_billing_reports")
def refresh_billing_reports() -> dict:
    """Beat, every BILLING_REPORT_INTERVAL_SECONDS: rebuild the drafts of the open and the
    previous month, finalise those due (billing/reports.py)."""
    return reports_refresh()


@shared_task(name="billing.tasks.reconcile_billing")
def reconcile_billing() -> dict:
    """Beat, daily: check rollups and reports against the raw usage since the previous
    month began; audit and repair each difference (a final report is never rebuilt)."""
    return billing_reconcile(repair=True).as_dict()


@shared_task(name="billing.tasks.rollup_usage_day")
def rollup_usage_day(day: str | None = None) -> dict:
    """The former beat task, kept so messages already queued under its name still run:
    rebuild one UTC day's usage rollups (default: today). Returns the day and daily rows."""
    target = date.fromisoformat(day) if day else timezone.now().date()
    rows = usage_rollup_day(day=target)
    return {"day": target.isoformat(), "rows": rows}


@shared_task(bind=True, name="billing.tasks.send_budget_notice", acks_late=True,
             autoretry_for=TRANSIENT_ERRORS, retry_backoff=5, retry_backoff_max=600, retry_jitter=True,
             max_retries=8)
def send_budget_notice(self, *, budget_id: int, subject: str, window_start: str, kind: str, figures: dict) -> dict:
    """One notice per budget, end user, window and kind: audit event, email, webhook.

    Idempotent: the task that creates the notice (identified by its task id, kept
    across retries and redeliveries) sends it; every other copy does nothing. On
    the last attempt a failing email is given up so the webhook still goes."""
    return notifications.send_budget_notice(
        budget_id=budget_id, subject=subject, window_start=window_start, kind=kind, figures=figures,
        owner=self.request.id, final_attempt=self.request.retries >= self.max_retries,
    )


@shared_task(bind=True, name="billing.tasks.deliver_budget_webhook", acks_late=True,
             autoretry_for=(WebhookFailed, OperationalError, InterfaceError), retry_backoff=True,
             retry_backoff_max=600, retry_jitter=True, max_retries=8)
def deliver_budget_webhook(self, notice_id: int) -> dict:
    """POST a budget notice to its org's webhook, signed; retried with exponential
    backoff on network errors and non-2xx answers, never for a refused address."""
    try:
        return notifications.deliver_webhook(notice_id)
    except WebhookRefused as exc:
        logger.warning("webhook of budget notice %s refused: %s", notice_id, exc)
        return {"status": "refused", "reason": str(exc)}
    except WebhookFailed as exc:
        logger.info("webhook of budget notice %s failed (attempt %s): %s", notice_id, self.request.retries + 1, exc)
        raise


# Queued by name from billing.notifications (which must not import this module).
notifications.register_task("billing.tasks.send_budget_notice", send_budget_notice)
notifications.register_task("billing.tasks.deliver_budget_webhook", deliver_budget_webhook)
