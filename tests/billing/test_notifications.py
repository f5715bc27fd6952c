"""Budget notifications without a worker (billing/notifications.py): one notice, audit
event and email per budget, end user, window and kind; who gets the email; the
gateway-side dedupe. The Celery tasks that send notices and deliver their webhooks:
tests/billing/test_tasks.py; signing and delivering webhooks: tests/billing/test_webhooks.py."""
import json
import threading
import time
from datetime import timedelta

from django.core import mail

from billing import notifications, tasks
from billing.models import BudgetNotice
from tests.support.notices import FIGURES, WINDOW, budget, budget_events, members, no_webhook_task  # noqa: F401  (fixtures)
from tests.support.notices import send_notice


# --- exactly one per window and kind ----------------------------------------------------

def test_repeated_notices_for_one_window_send_one_email_and_one_audit_event(budget, members, no_webhook_task):
    results = [send_notice(budget, owner=f"task-{i}") for i in range(3)]
    assert [r["status"] for r in results] == ["sent", "duplicate", "duplicate"]
    assert BudgetNotice.objects.count() == 1
    events = budget_events(budget.org)
    assert [e.action for e in events] == ["budget.soft_threshold"]
    assert events[0].actor_type == "system" and events[0].target_type == "budget"
    assert events[0].target_id == str(budget.pk)
    assert events[0].data["spent_usd"] == "16.2" and events[0].data["window_start"] == "2031-05-01T00:00:00Z"
    assert events[0].data["subject"] == "" and events[0].data["kind"] == "soft"
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.subject == "[OpenClaw] Budget 'monthly' (acme) reached 80% of its limit"
    assert "$16.2 of $20" in message.body and "2031-05-01T00:00:00Z to 2031-06-01T00:00:00Z" in message.body
    assert "81%" in message.body
    assert BudgetNotice.objects.get().email_sent_at is not None
    assert no_webhook_task == []  # the org has no webhook URL


def test_a_new_window_or_the_other_kind_is_a_new_notice(budget, members, no_webhook_task):
    send_notice(budget)
    send_notice(budget, window=WINDOW + timedelta(days=31))
    send_notice(budget, kind="hard")
    send_notice(budget, kind="hard")
    send_notice(budget, subject="alice")  # per end user, too
    assert BudgetNotice.objects.count() == 4
    assert [e.action for e in budget_events(budget.org)] == [
        "budget.soft_threshold", "budget.soft_threshold", "budget.hard_limit", "budget.soft_threshold"]
    assert len(mail.outbox) == 4
    assert mail.outbox[2].subject == "[OpenClaw] Budget 'monthly' (acme) reached its hard limit"
    assert "refused (402)" in mail.outbox[2].body
    assert mail.outbox[3].subject == "[OpenClaw] Budget 'monthly' (acme, end user alice) reached 80% of its limit"


def test_the_email_goes_to_active_owners_and_admins_only(budget, members, no_webhook_task):
    send_notice(budget)
    assert sorted(e.lower() for e in mail.outbox[0].to) == ["adam@acme.test", "olivia@acme.test"]


def test_no_owner_or_admin_with_an_email_means_no_email(budget, no_webhook_task):
    result = send_notice(budget)
    assert result["email"] == "no_recipients" and mail.outbox == []
    assert len(budget_events(budget.org)) == 1


def test_an_end_user_id_cannot_inject_headers_into_the_email(budget, members, no_webhook_task):
    send_notice(budget, subject="mallory\r\nBcc: victim@example.com")
    assert len(mail.outbox) == 1
    assert "\n" not in mail.outbox[0].subject and mail.outbox[0].bcc == []
    mail.outbox[0].message()  # renders without BadHeaderError


def test_an_org_with_a_webhook_url_gets_its_delivery_queued(budget, members, no_webhook_task):
    org = budget.org
    org.webhook_url = "https://hooks.example.com/openclaw"
    org.save()
    assert len(org.webhook_secret) > 30
    send_notice(budget)
    send_notice(budget)
    notice = BudgetNotice.objects.get()
    assert no_webhook_task == [((notice.pk,), {})]
    payload = notifications.webhook_payload(notice)
    assert payload["event"] == "budget.soft_threshold" and payload["id"] == f"notice_{notice.pk}"
    assert payload["organization"]["slug"] == "acme" and payload["budget"]["name"] == "monthly"
    assert payload["window_start"] == "2031-05-01T00:00:00Z" and payload["figures"] == FIGURES
    json.dumps(payload)


# --- the gateway side: once per process, off the event loop ------------------------------

def test_enqueue_hands_each_notice_over_once_on_a_thread(monkeypatch):
    notifications.reset_handed_over()
    calls = []

    def fake_delay(**kwargs):
        calls.append((threading.current_thread().name, kwargs))

    monkeypatch.setattr(tasks.send_budget_notice, "delay", fake_delay)
    for _ in range(50):
        notifications.enqueue_budget_notice(budget_id=7, subject="", window_start=WINDOW, kind="soft",
                                            figures=FIGURES)
    notifications.enqueue_budget_notice(budget_id=7, subject="", window_start=WINDOW, kind="hard", figures=FIGURES)
    notifications.enqueue_budget_notice(budget_id=7, subject="bob", window_start=WINDOW, kind="soft", figures={})
    notifications.enqueue_budget_notice(budget_id=7, subject="", window_start=WINDOW + timedelta(days=31),
                                        kind="soft", figures={})
    assert notifications.wait_for_handovers(10)
    assert len(calls) == 4
    assert all(name.startswith("budget-notice") for name, _ in calls)
    first = next(kwargs for _, kwargs in calls if kwargs["kind"] == "soft" and kwargs["subject"] == ""
                 and kwargs["window_start"] == "2031-05-01T00:00:00Z")
    assert first == {"budget_id": 7, "subject": "", "window_start": "2031-05-01T00:00:00Z", "kind": "soft",
                     "figures": FIGURES}
    notifications.reset_handed_over()


def test_enqueue_never_raises_and_tries_again_after_a_failed_hand_over(monkeypatch):
    notifications.reset_handed_over()
    calls = []

    def broken_delay(**kwargs):
        calls.append(kwargs)
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.send_budget_notice, "delay", broken_delay)
    monkeypatch.setattr(notifications, "RETRY_HANDOVER_AFTER", 0.0)
    args = dict(budget_id=8, subject="", window_start=WINDOW, kind="hard", figures={})
    notifications.enqueue_budget_notice(**args)
    assert notifications.wait_for_handovers(10) and len(calls) == 1
    notifications.enqueue_budget_notice(**args)  # the failure is forgotten: handed over again
    assert notifications.wait_for_handovers(10) and len(calls) == 2
    notifications.reset_handed_over()


async def test_enqueue_from_the_event_loop_does_not_wait_for_the_broker(monkeypatch):
    notifications.reset_handed_over()
    release = threading.Event()
    monkeypatch.setattr(tasks.send_budget_notice, "delay", lambda **kwargs: release.wait(10))
    started = time.monotonic()
    notifications.enqueue_budget_notice(budget_id=9, subject="", window_start=WINDOW, kind="soft", figures={})
    assert time.monotonic() - started < 0.1
    release.set()
    assert notifications.wait_for_handovers(10)
    notifications.reset_handed_over()


def test_the_in_process_memory_is_bounded(monkeypatch):
    notifications.reset_handed_over()
    monkeypatch.setattr(tasks.send_budget_notice, "delay", lambda **kwargs: None)
    monkeypatch.setattr(notifications, "HANDED_OVER_MAX", 10)
    for i in range(25):
        notifications.enqueue_budget_notice(budget_id=i, subject="", window_start=WINDOW, kind="soft", figures={})
    assert notifications.wait_for_handovers(10)
    assert len(notifications._handed_over) == 10
    notifications.reset_handed_over()
