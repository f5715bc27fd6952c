"""The Celery tasks (billing/tasks.py), run eagerly: a budget notice's email retried by
its task and never sent twice, its webhook delivered once and never retried when the
address is refused, a day's usage rolled up. What a notice is and who gets it:
tests/billing/test_notifications.py; the tasks in a real worker: tests/e2e/test_embedded_stack.py."""
import json
from datetime import date, datetime, timezone as dt_timezone

from django.core import mail
from django.utils import timezone

from billing import tasks
from billing.models import BudgetNotice, UsageDailyRollup
from billing.services import usage_records_write
from billing.webhooks import verify_signature
from tests.support.notices import FIGURES, budget, budget_events, members, no_webhook_task  # noqa: F401  (fixtures)
from tests.support.notices import send_notice
from tests.support.usage import draft_for
from tests.support.webhooks import allow_loopback, receiver  # noqa: F401  (fixture)


def test_a_failed_email_is_retried_by_its_task_and_never_sent_twice(budget, members, no_webhook_task, monkeypatch):
    real_send = mail.EmailMessage.send
    failures = []

    def flaky_send(self, *args, **kwargs):
        if not failures:
            failures.append(1)
            raise ConnectionRefusedError("smtp down")
        return real_send(self, *args, **kwargs)

    monkeypatch.setattr(mail.EmailMessage, "send", flaky_send)
    kwargs = dict(budget_id=budget.pk, subject="", window_start="2031-05-01T00:00:00Z", kind="hard", figures=FIGURES)
    # Eager apply runs the task's retry at once, with the same task id.
    result = tasks.send_budget_notice.apply(kwargs=kwargs, task_id="owner-task")
    assert result.successful(), result.traceback
    assert failures == [1] and len(mail.outbox) == 1
    notice = BudgetNotice.objects.get()
    assert notice.email_sent_at is not None
    # The same task delivered again (a lost ack), and a copy from another gateway process.
    tasks.send_budget_notice.apply(kwargs=kwargs, task_id="owner-task")
    tasks.send_budget_notice.apply(kwargs=kwargs, task_id="another-task")
    assert len(mail.outbox) == 1 and len(budget_events(budget.org)) == 1


def test_the_delivery_task_stamps_the_notice_and_skips_it_afterwards(budget, allow_loopback, no_webhook_task):
    org = budget.org
    with receiver() as server:
        org.webhook_url = f"http://127.0.0.1:{server.server_port}/hook"
        org.save()
        send_notice(budget, kind="hard")
        notice = BudgetNotice.objects.get()
        assert tasks.deliver_budget_webhook.apply(args=[notice.pk]).get()["status"] == "delivered"
        assert tasks.deliver_budget_webhook.apply(args=[notice.pk]).get()["status"] == "already_delivered"
    assert len(server.received) == 1
    headers, body = server.received[0]
    assert verify_signature(org.webhook_secret, headers["X-OpenClaw-Signature"], body)
    assert json.loads(body)["event"] == "budget.hard_limit"
    assert BudgetNotice.objects.get().webhook_delivered_at is not None


def test_a_refused_webhook_is_not_retried(budget, no_webhook_task, monkeypatch):
    org = budget.org
    org.webhook_url = "http://169.254.169.254/latest"
    org.save()
    send_notice(budget)
    retries = []
    monkeypatch.setattr(tasks.deliver_budget_webhook, "retry", lambda *a, **k: retries.append(1))
    result = tasks.deliver_budget_webhook.apply(args=[BudgetNotice.objects.get().pk]).get()
    assert result["status"] == "refused" and retries == []
    assert BudgetNotice.objects.get().webhook_delivered_at is None


def test_the_rollup_task_rebuilds_the_day_it_is_given_or_today(issued_key):
    day = date(2031, 5, 1)
    usage_records_write([draft_for(issued_key, started_at=datetime(2031, 5, 1, 9, tzinfo=dt_timezone.utc))])
    assert tasks.rollup_usage_day.apply(args=["2031-05-01"]).get() == {"day": "2031-05-01", "rows": 1}
    assert UsageDailyRollup.objects.get(day=day).requests == 1
    assert tasks.rollup_usage_day.apply().get() == {"day": timezone.now().date().isoformat(), "rows": 0}
