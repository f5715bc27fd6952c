"""Budget notifications: exactly one per budget, end user, window and kind.

Two halves:

- `enqueue_budget_notice` runs in the gateway, inside the asyncio event loop, on
  the request path (possibly for every request past a threshold). It never blocks:
  it drops what this process already handed over (a bounded in-process set) and
  gives the Celery publish to a small thread pool, logging failures.
- `send_budget_notice` runs in the Celery worker (`billing.tasks.send_budget_notice`).
  The `BudgetNotice` unique constraint decides: the task that creates the notice
  (in one transaction with its audit event) owns it and sends the email, then
  queues the webhook (`billing.tasks.deliver_budget_webhook`); any other task for
  the same notice — from another gateway process, or enqueued again after this
  process forgot — does nothing. A retry or a redelivery of the owning task (same
  Celery task id) carries on where it stopped: the email is sent at most once
  `email_sent_at` is stamped.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, wait
from datetime import datetime, timezone as dt_timezone
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.utils import timezone

from billing.models import Budget, BudgetNotice
from infra.threads import NOTICES
from tenants.audit import record_event
from tenants.models import AuditEvent, Membership

logger = logging.getLogger(__name__)

ACTIONS = {BudgetNotice.Kind.SOFT: "budget.soft_threshold", BudgetNotice.Kind.HARD: "budget.hard_limit"}

# --- gateway side: hand over once, off the event loop ----------------------------------

HANDED_OVER_MAX = 10_000  # keys remembered per process (oldest forgotten first)
RETRY_HANDOVER_AFTER = 30.0  # seconds before a failed hand-over may be tried again

_handed_over: OrderedDict[tuple, float] = OrderedDict()  # key -> monotonic time before which it is not re-sent
_handed_over_lock = threading.Lock()
_pending: set[Future] = set()


def _utc(value: datetime | str) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if timezone.is_naive(value):
        value = timezone.make_aware(value, dt_timezone.utc)
    return value.astimezone(dt_timezone.utc)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat().replace("+00:00", "Z")


def enqueue_budget_notice(*, budget_id: int, subject: str, window_start: datetime, kind: str, figures: dict) -> None:
    """Ask the worker to notify about a budget crossing (non-blocking; safe to call per request).

    `figures` must be JSON-safe (strings, ints, None). Repeated calls for the same
    (budget, subject, window, kind) in this process are dropped here; across
    processes the worker's unique notice makes it one."""
    try:
        window = _utc(window_start)
        key = (int(budget_id), subject or "", window, str(kind))
    except Exception:  # never let a notification break a request
        logger.exception("budget notice for budget %s not enqueued: bad arguments", budget_id)
        return
    now = time.monotonic()
    with _handed_over_lock:
        not_before = _handed_over.get(key)
        if not_before is not None and not_before > now:
            return
        _handed_over[key] = float("inf")
        _handed_over.move_to_end(key)
        while len(_handed_over) > HANDED_OVER_MAX:
            _handed_over.popitem(last=False)
    kwargs = {"budget_id": key[0], "subject": key[1], "window_start": _iso(window), "kind": key[3],
              "figures": dict(figures or {})}
    try:
        future = NOTICES.submit(_hand_over, key, kwargs)
    except RuntimeError:  # the pool is shut down (process exiting)
        logger.warning("budget notice %s not enqueued: process shutting down", key)
        _forget(key)
        return
    with _handed_over_lock:
        _pending.add(future)
    future.add_done_callback(_done)


def _hand_over(key: tuple, kwargs: dict) -> None:
    try:
        queue_task("billing.tasks.send_budget_notice", **kwargs)  # Celery's publish retry policy: a few quick retries
    except Exception:
        logger.exception("could not enqueue budget notice %s; will try again on a later request", kwargs)
        _forget(key, retry_after=RETRY_HANDOVER_AFTER)


# The Celery tasks this module queues, registered by billing/tasks.py when it is
# imported (billing/apps.py imports it in every process). The tasks are thin wrappers
# around this module, so the import goes one way: tasks -> notifications.
_tasks: dict[str, Any] = {}


def register_task(name: str, task) -> None:
    _tasks[name] = task


def queue_task(name: str, *args, **kwargs) -> None:
    """Queue the billing task registered as `name`."""
    _tasks[name].delay(*args, **kwargs)


def _forget(key: tuple, *, retry_after: float = 0.0) -> None:
    with _handed_over_lock:
        if key in _handed_over:
            _handed_over[key] = time.monotonic() + retry_after


def _done(future: Future) -> None:
    with _handed_over_lock:
        _pending.discard(future)


def wait_for_handovers(timeout: float = 10.0) -> bool:
    """Wait until every hand-over started so far has finished (tests, shutdown)."""
    with _handed_over_lock:
        pending = set(_pending)
    _done_set, not_done = wait(pending, timeout=timeout)
    return not not_done


def reset_handed_over() -> None:
    """Forget what this process handed over (tests)."""
    with _handed_over_lock:
        _handed_over.clear()


# --- worker side: one notice, its audit event, one email, the webhook -----------------

def send_budget_notice(*, budget_id: int, subject: str, window_start: datetime | str, kind: str, figures: dict,
                       owner: str | None = None, final_attempt: bool = False) -> dict:
    """Create the budget's notice for this window and kind and send it, once.

    `owner` is the Celery task id: a retry or redelivery of the task that created
    the notice finishes its sending; anyone else finding the notice does nothing.
    Errors sending the email propagate (the task retries) unless `final_attempt`,
    when the email is given up and the webhook still goes."""
    if kind not in ACTIONS:
        raise ValueError(f"unknown budget notice kind {kind!r}")
    budget = Budget.objects.select_related("org").filter(pk=budget_id).first()
    if budget is None:
        logger.info("budget %s is gone: no notice", budget_id)
        return {"status": "no_budget"}
    window = _utc(window_start)
    subject = subject or ""
    figures = dict(figures or {})
    with transaction.atomic():
        notice, created = BudgetNotice.objects.get_or_create(
            budget=budget, subject=subject, window_start=window, kind=kind,
            defaults={"data": {"figures": figures, "task_id": owner or ""}},
        )
        if created:
            record_event(
                org=budget.org, actor_type=AuditEvent.ActorType.SYSTEM, action=ACTIONS[kind],
                target_type="budget", target_id=str(budget.pk),
                data={**figures, "budget": figures.get("budget", budget.name), "subject": subject,
                      "window_start": _iso(window), "kind": kind, "notice": notice.pk},
            )
    if not created and not (owner and notice.data.get("task_id") == owner):
        return {"status": "duplicate", "notice": notice.pk}
    result = {"status": "sent", "notice": notice.pk, "email": "already_sent" if notice.email_sent_at else "none"}
    if notice.email_sent_at is None:
        try:
            result["email"] = _send_email(notice, budget)
        except Exception:
            if not final_attempt:
                raise
            logger.exception("giving up the email of budget notice %s", notice.pk)
            result["email"] = "failed"
    if budget.org.webhook_url:
        queue_task("billing.tasks.deliver_budget_webhook", notice.pk)
        result["webhook"] = "queued"
    return result


def recipients(org) -> list[str]:
    """Distinct, non-empty emails of the org's active owners and admins."""
    emails = (Membership.objects.filter(org=org, role__in=[Membership.Role.OWNER, Membership.Role.ADMIN],
                                        user__is_active=True)
              .exclude(user__email="").order_by("user__email").values_list("user__email", flat=True))
    seen: set[str] = set()
    result = []
    for email in emails:
        email = email.strip()
        if email and email.lower() not in seen:
            seen.add(email.lower())
            result.append(email)
    return result


def _send_email(notice: BudgetNotice, budget: Budget) -> str:
    to = recipients(budget.org)
    if not to:
        logger.info("budget notice %s: the org has no owner or admin with an email", notice.pk)
        return "no_recipients"
    subject_line, body = render_email(notice, budget)
    EmailMessage(subject=subject_line, body=body, from_email=settings.DEFAULT_FROM_EMAIL, to=to).send()
    BudgetNotice.objects.filter(pk=notice.pk).update(email_sent_at=timezone.now())
    return "sent"


_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


def _clean(text: object, limit: int = 120) -> str:
    """Untrusted text (an end user id comes from a client) on one line, shortened."""
    value = _UNSAFE.sub(" ", str(text)).strip()
    return value if len(value) <= limit else value[: limit - 1] + "…"


def render_email(notice: BudgetNotice, budget: Budget) -> tuple[str, str]:
    figures = notice.data.get("figures", {})
    org = budget.org
    who = f"{org.slug}" + (f", end user {_clean(notice.subject, 60)}" if notice.subject else "")
    name = _clean(budget.name, 100)
    if notice.kind == BudgetNotice.Kind.SOFT:
        subject_line = f"[OpenClaw] Budget '{name}' ({who}) reached {budget.soft_threshold_percent}% of its limit"
        headline = (f"The budget '{name}' of {org.name} has used {figures.get('percent', '?')}% of its limit, "
                    f"past its soft threshold of {budget.soft_threshold_percent}%.")
    else:
        subject_line = f"[OpenClaw] Budget '{name}' ({who}) reached its hard limit"
        action = ("requests are refused (402)" if budget.hard_action == Budget.HardAction.BLOCK
                  else "requests go to its fallback route")
        headline = f"The budget '{name}' of {org.name} has reached its hard limit: {action} until the window ends."
    lines = [headline, ""]
    lines.append(f"Organization: {org.name} ({org.slug})")
    lines.append(f"Budget:       {name} (scope {budget.scope}, window {budget.window})")
    if notice.subject:
        lines.append(f"End user:     {_clean(notice.subject)}")
    window_end = figures.get("window_end")
    lines.append(f"Window:       {_iso(notice.window_start)}" + (f" to {window_end}" if window_end else "") + " (UTC)")
    if figures.get("limit_usd") is not None:
        lines.append(f"Spent:        ${figures.get('spent_usd', '?')} of ${figures['limit_usd']}")
    if figures.get("limit_tokens") is not None:
        lines.append(f"Tokens:       {figures.get('spent_tokens', '?')} of {figures['limit_tokens']}")
    if figures.get("percent") is not None:
        lines.append(f"Used:         {figures['percent']}%")
    shown = {"budget", "limit_usd", "spent_usd", "limit_tokens", "spent_tokens", "window_end", "percent"}
    extra = {k: v for k, v in figures.items() if k not in shown}
    for key in sorted(extra):
        lines.append(f"{key}: {_clean(extra[key])}")
    lines += ["", "You receive this because you are an owner or admin of the organization.",
              "One notification is sent per budget, window and kind; the next one comes when a new window "
              "crosses a threshold.", ""]
    return _clean(subject_line, 250), "\n".join(lines)


# --- the webhook ----------------------------------------------------------------------

def webhook_payload(notice: BudgetNotice) -> dict:
    budget = notice.budget
    org = budget.org
    return {
        "event": ACTIONS[notice.kind],
        "id": f"notice_{notice.pk}",
        "created_at": _iso(notice.created_at),
        "organization": {"id": str(org.public_id), "slug": org.slug},
        "budget": {"id": budget.pk, "name": budget.name, "scope": budget.scope, "window": budget.window,
                   "soft_threshold_percent": budget.soft_threshold_percent, "hard_action": budget.hard_action},
        "subject": notice.subject,
        "window_start": _iso(notice.window_start),
        "kind": notice.kind,
        "figures": notice.data.get("figures", {}),
    }


def deliver_webhook(notice_id: int) -> dict:
    """POST the notice to its org's webhook unless already delivered (raises webhook errors)."""
    from billing import webhooks

    notice = BudgetNotice.objects.select_related("budget__org").filter(pk=notice_id).first()
    if notice is None:
        return {"status": "no_notice"}
    if notice.webhook_delivered_at is not None:
        return {"status": "already_delivered"}
    org = notice.budget.org
    if not org.webhook_url:
        return {"status": "no_webhook"}
    if not org.webhook_secret:  # URL set without save() (a queryset update): give it its secret now
        org.save(update_fields=["webhook_secret"])
    status = webhooks.deliver(org.webhook_url, org.webhook_secret, webhook_payload(notice))
    BudgetNotice.objects.filter(pk=notice.pk, webhook_delivered_at__isnull=True).update(
        webhook_delivered_at=timezone.now())
    return {"status": "delivered", "http_status": status}
