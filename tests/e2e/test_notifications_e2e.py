"""Budget notifications through a real Celery worker process: tasks enqueued the way
the gateway does (by name, on the stack's broker), the same notice three times and
the other kind once — one email each to the owner (file backend), one audit event
each, and one signed webhook each, the first delivery retried after a 500."""
import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from billing.webhooks import verify_signature
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

WINDOW_START = "2031-05-01T00:00:00Z"
FIGURES = {"budget": "monthly", "limit_usd": "20", "spent_usd": "16.2", "limit_tokens": None,
           "spent_tokens": 1234, "window_end": "2031-06-01T00:00:00Z", "percent": 81}


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with self.server.lock:
            self.server.received.append((dict(self.headers), body))
            fail = self.server.fail_first and len(self.server.received) == 1
        self.send_response(500 if fail else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def receiver():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    server.received, server.lock, server.fail_first = [], threading.Lock(), True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def notify_stack(mockllm, tmp_path_factory, receiver):
    data_dir = tmp_path_factory.mktemp("notify")
    stack = Stack(data_dir, mock_api_base=mockllm.api_base, name="notify")
    mail_dir = data_dir / "mail"
    mail_dir.mkdir()
    stack.env.update(OPENCLAW_EMAIL_BACKEND="django.core.mail.backends.filebased.EmailBackend",
                     OPENCLAW_EMAIL_FILE_PATH=str(mail_dir), OPENCLAW_WEBHOOK_ALLOWED_NETWORKS="127.0.0.1/32")
    stack.prepare()
    stack.mail_dir = mail_dir
    stack.start_worker()
    yield stack
    stack.stop()


def setup_org(stack: Stack, webhook_url: str) -> dict:
    """An owner and a member with emails in the demo org, a budget, the org's webhook URL."""
    script = (
        "import json; from decimal import Decimal; from billing.models import Budget; "
        "from tenants.models import Organization; from tenants.services import user_membership_set; "
        "org = Organization.objects.get(slug='demo'); "
        "user_membership_set(org=org, username='owner-olga', role='owner', email='olga@demo.test'); "
        "user_membership_set(org=org, username='member-max', role='member', email='max@demo.test'); "
        f"org.webhook_url = {webhook_url!r}; org.save(); "
        "b = Budget.objects.create(org=org, name='monthly', window='month', limit_usd=Decimal('20')); "
        "print(json.dumps({'budget_id': b.pk}))"
    )
    info = json.loads(stack.manage("shell", "-c", script).strip().splitlines()[-1])
    # The signing secret, as a receiver would have it (generated when the URL was saved).
    info["secret"] = stack.query("SELECT webhook_secret FROM tenants_organization WHERE slug = %s", ("demo",))[0][0]
    return info


def poll(check, timeout=60.0, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def emails(mail_dir: Path) -> list[str]:
    """Messages written by the file backend (one file per connection, messages separated by a line of dashes)."""
    messages = []
    for path in sorted(mail_dir.glob("*.log")):
        for chunk in path.read_text().split("-" * 79):
            if chunk.strip():
                messages.append(chunk)
    return messages


def test_a_worker_sends_one_email_audit_event_and_signed_webhook_per_window_and_kind(notify_stack, receiver):
    stack = notify_stack
    info = setup_org(stack, f"http://127.0.0.1:{receiver.server_port}/openclaw-hook")
    client = stack.celery_client()
    base = {"budget_id": info["budget_id"], "subject": "", "window_start": WINDOW_START, "figures": FIGURES}
    results = [client.send_task("billing.tasks.send_budget_notice", kwargs={**base, "kind": "soft"})
               for _ in range(3)]
    results.append(client.send_task("billing.tasks.send_budget_notice",
                                    kwargs={**base, "kind": "hard", "figures": {**FIGURES, "percent": 100}}))
    outcomes = [r.get(timeout=120) for r in results]
    log = (stack.data_dir / "worker.log").read_text()
    assert sorted(o["status"] for o in outcomes[:3]) == ["duplicate", "duplicate", "sent"], log[-3000:]
    assert outcomes[3]["status"] == "sent"
    assert all(o["email"] == "sent" and o["webhook"] == "queued" for o in outcomes if o["status"] == "sent")

    # Both webhooks delivered (the first answer was a 500: retried with backoff).
    delivered = poll(lambda: stack.query(
        "SELECT count(*) FROM billing_budgetnotice WHERE webhook_delivered_at IS NOT NULL")[0][0] == 2)
    assert delivered, (receiver.received, (stack.data_dir / "worker.log").read_text()[-3000:])
    time.sleep(2)  # anything extra would arrive now

    notices = stack.query("SELECT kind, email_sent_at FROM billing_budgetnotice WHERE budget_id = %s ORDER BY kind",
                          (info["budget_id"],))
    assert [n[0] for n in notices] == ["hard", "soft"] and all(n[1] is not None for n in notices)

    events = stack.query("SELECT action, target_id, data FROM tenants_auditevent WHERE action LIKE %s ORDER BY seq",
                         ("budget.%",))
    assert [e[0] for e in events] == ["budget.soft_threshold", "budget.hard_limit"]
    assert all(e[1] == str(info["budget_id"]) for e in events)
    data = events[0][2] if isinstance(events[0][2], dict) else json.loads(events[0][2])
    assert data["spent_usd"] == "16.2" and data["window_start"] == WINDOW_START

    messages = emails(stack.mail_dir)
    assert len(messages) == 2, messages
    for message in messages:
        to = next(line for line in message.splitlines() if line.startswith("To: "))
        assert "olga@demo.test" in to and "max@demo.test" not in message  # owners and admins only
    assert sum("reached 80% of its limit" in m for m in messages) == 1
    assert sum("reached its hard limit" in m for m in messages) == 1

    # Three requests: the soft notice's first attempt (500), its retry, the hard notice.
    assert len(receiver.received) == 3, receiver.received
    by_event = {}
    for headers, body in receiver.received:
        assert headers["Content-Type"] == "application/json"
        assert verify_signature(info["secret"], headers["X-OpenClaw-Signature"], body)
        payload = json.loads(body)
        assert headers["X-OpenClaw-Event"] == payload["event"]
        by_event.setdefault(payload["event"], set()).add(payload["id"])
    assert {event: len(ids) for event, ids in by_event.items()} == {"budget.soft_threshold": 1,
                                                                    "budget.hard_limit": 1}
    payload = json.loads(receiver.received[-1][1])
    assert payload["organization"]["slug"] == "demo" and payload["budget"]["id"] == info["budget_id"]
    assert payload["window_start"] == WINDOW_START

    # The same notice enqueued again later (another gateway process, or after a restart): nothing more.
    again = client.send_task("billing.tasks.send_budget_notice", kwargs={**base, "kind": "hard"}).get(timeout=60)
    assert again["status"] == "duplicate"
    time.sleep(1)
    assert len(emails(stack.mail_dir)) == 2 and len(receiver.received) == 3


async def test_the_gateway_raises_one_notice_per_kind_however_many_requests_cross(notify_stack, receiver):
    """Over real sockets: many requests past the soft threshold and several refused at
    the hard limit make exactly one soft and one hard notification."""
    import asyncio

    import websockets

    from tests.support.frames import collect, next_frame, send_frame

    stack = notify_stack
    await asyncio.to_thread(setup_org, stack, f"http://127.0.0.1:{receiver.server_port}/openclaw-hook")
    budget_id = int((await asyncio.to_thread(stack.manage, "shell", "-c", (
        "from decimal import Decimal; from billing.models import Budget; from tenants.models import Organization; "
        "b = Budget.objects.create(org=Organization.objects.get(slug='demo'), name='live', window='day', "
        "limit_usd=Decimal('0.01'), soft_threshold_percent=50); print(b.pk)"))).strip().splitlines()[-1])
    before_mail, before_hooks = len(emails(stack.mail_dir)), len(receiver.received)
    port = await asyncio.to_thread(stack.start_gateway)
    ws = await websockets.connect(stack.url(port))
    await send_frame(ws, {"type": "auth", "token": stack.api_key})
    assert (await next_frame(ws))["type"] == "auth_ok"
    outcomes = []
    for i in range(10):
        await send_frame(ws, {"type": "llm_request", "request_id": f"n{i}", "model": "gpt-4-turbo",
                              "prompt": "go [[mock tokens=50]]", "parameters": {"max_tokens": 50}})
        outcomes.append((await collect(ws))[f"n{i}"][-1].get("code", 200))
    await ws.close()
    assert outcomes.count(200) >= 3 and outcomes.count(402) >= 3, outcomes

    def notices():
        return stack.query("SELECT kind FROM billing_budgetnotice WHERE budget_id = %s AND email_sent_at IS NOT "
                           "NULL ORDER BY kind", (budget_id,))

    assert await asyncio.to_thread(poll, lambda: len(notices()) == 2), notices()
    await asyncio.to_thread(poll, lambda: len(receiver.received) >= before_hooks + 2)
    await asyncio.sleep(2)  # anything extra would arrive now
    assert [n[0] for n in notices()] == ["hard", "soft"], stack.query("SELECT kind, subject, window_start, created_at, data FROM billing_budgetnotice WHERE budget_id = %s", (budget_id,))
    new_mail = emails(stack.mail_dir)[before_mail:]
    assert len(new_mail) == 2 and all("'live'" in m for m in new_mail)
    hooks = receiver.received[before_hooks:]
    assert len(hooks) == 2
    secret = stack.query("SELECT webhook_secret FROM tenants_organization WHERE slug = %s", ("demo",))[0][0]
    assert all(verify_signature(secret, h["X-OpenClaw-Signature"], body) for h, body in hooks)
    assert {json.loads(body)["event"] for _, body in hooks} == {"budget.soft_threshold", "budget.hard_limit"}
