"""Budget notifications without a worker: one notice, audit event and email per
budget, end user, window and kind; who gets the email; the gateway-side dedupe;
webhook signatures; and what `deliver` refuses, follows (nothing) and waits for."""
import http.server
import json
import socket
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from billing import notifications, tasks, webhooks
from billing.models import Budget, BudgetNotice
from billing.webhooks import WebhookFailed, WebhookRefused, deliver, sign, verify_signature
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
    calls = []
    monkeypatch.setattr(tasks.deliver_budget_webhook, "delay", lambda *a, **k: calls.append((a, k)))
    return calls


def send(budget, *, kind="soft", window=WINDOW, subject="", owner=None, figures=FIGURES):
    return notifications.send_budget_notice(budget_id=budget.pk, subject=subject, window_start=window, kind=kind,
                                            figures=figures, owner=owner)


def budget_events(org):
    return list(AuditEvent.objects.filter(org=org, action__startswith="budget.").order_by("seq"))


# --- exactly one per window and kind ----------------------------------------------------

def test_repeated_notices_for_one_window_send_one_email_and_one_audit_event(budget, members, no_webhook_task):
    results = [send(budget, owner=f"task-{i}") for i in range(3)]
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
    send(budget)
    send(budget, window=WINDOW + timedelta(days=31))
    send(budget, kind="hard")
    send(budget, kind="hard")
    send(budget, subject="alice")  # per end user, too
    assert BudgetNotice.objects.count() == 4
    assert [e.action for e in budget_events(budget.org)] == [
        "budget.soft_threshold", "budget.soft_threshold", "budget.hard_limit", "budget.soft_threshold"]
    assert len(mail.outbox) == 4
    assert mail.outbox[2].subject == "[OpenClaw] Budget 'monthly' (acme) reached its hard limit"
    assert "refused (402)" in mail.outbox[2].body
    assert mail.outbox[3].subject == "[OpenClaw] Budget 'monthly' (acme, end user alice) reached 80% of its limit"


def test_the_email_goes_to_active_owners_and_admins_only(budget, members, no_webhook_task):
    send(budget)
    assert sorted(e.lower() for e in mail.outbox[0].to) == ["adam@acme.test", "olivia@acme.test"]


def test_no_owner_or_admin_with_an_email_means_no_email(budget, no_webhook_task):
    result = send(budget)
    assert result["email"] == "no_recipients" and mail.outbox == []
    assert len(budget_events(budget.org)) == 1


def test_an_end_user_id_cannot_inject_headers_into_the_email(budget, members, no_webhook_task):
    send(budget, subject="mallory\r\nBcc: victim@example.com")
    assert len(mail.outbox) == 1
    assert "\n" not in mail.outbox[0].subject and mail.outbox[0].bcc == []
    mail.outbox[0].message()  # renders without BadHeaderError


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


def test_an_org_with_a_webhook_url_gets_its_delivery_queued(budget, members, no_webhook_task):
    org = budget.org
    org.webhook_url = "https://hooks.example.com/openclaw"
    org.save()
    assert len(org.webhook_secret) > 30
    send(budget)
    send(budget)
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


# --- signatures ---------------------------------------------------------------------------

def test_a_fresh_valid_signature_is_accepted():
    body = webhooks.encode_body({"event": "budget.hard_limit", "b": 1, "a": [1, 2]})
    assert body == b'{"a":[1,2],"b":1,"event":"budget.hard_limit"}'
    header = webhooks.signature_header("s3cret", body)
    assert header.startswith("t=") and ",v1=" in header
    assert verify_signature("s3cret", header, body)
    assert verify_signature("s3cret", header, body.decode())


def test_tampered_body_wrong_secret_and_old_timestamps_are_rejected():
    body = b'{"event":"budget.soft_threshold","spent_usd":"16.2"}'
    now = 1_900_000_000
    header = f"t={now},v1={sign('s3cret', now, body)}"
    assert verify_signature("s3cret", header, body, now=now)
    assert not verify_signature("s3cret", header, body.replace(b"16.2", b"1.62"), now=now)
    assert not verify_signature("other", header, body, now=now)
    assert not verify_signature("s3cret", header, body, now=now + 301)  # more than five minutes old
    assert verify_signature("s3cret", header, body, now=now + 299)
    assert not verify_signature("s3cret", header, body, now=now - 301)  # from the future
    # The timestamp is signed too: replaying the signature with a fresh t fails.
    assert not verify_signature("s3cret", f"t={now + 200},v1={sign('s3cret', now, body)}", body, now=now + 200)
    for bad in ("", "v1=abc", f"t={now}", "t=soon,v1=abc", "garbage"):
        assert not verify_signature("s3cret", bad, body, now=now)


# --- deliver: refused addresses ------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook",
    "http://10.1.2.3/hook",
    "https://192.168.0.10/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[fe80::1]/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://100.64.0.1/hook",
    "http://2130706433/hook",  # 127.0.0.1 as an integer
    "http://localhost:8080/hook",
])
def test_private_loopback_and_link_local_addresses_are_refused(url):
    with pytest.raises(WebhookRefused):
        deliver(url, "secret", {"event": "budget.soft_threshold"})


@pytest.mark.parametrize("url", ["ftp://hooks.example.com/x", "file:///etc/passwd", "gopher://example.com/",
                                 "hooks.example.com/no-scheme", "https://user:pw@hooks.example.com/"])
def test_only_plain_http_and_https_urls_are_accepted(url):
    with pytest.raises(WebhookRefused):
        deliver(url, "secret", {})


def test_a_host_is_refused_if_any_of_its_addresses_is_private(monkeypatch):
    def fake_getaddrinfo(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(WebhookRefused, match="10.0.0.5"):
        deliver("https://hooks.example.com/", "secret", {})


# --- deliver: against a local server ---------------------------------------------------------

class _Receiver(http.server.BaseHTTPRequestHandler):
    behaviour = "ok"
    received: list

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))
        mode = self.server.behaviour
        if mode == "slow":
            time.sleep(2)
        if mode == "drip":  # a byte at a time: every read is quick, the whole is not
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.1)
            return
        status = {"ok": 204, "redirect": 302, "error": 500, "slow": 200}[mode]
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@contextmanager
def receiver(behaviour="ok"):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.daemon_threads = True
    server.behaviour = behaviour
    server.received = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def allow_loopback(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]


def test_an_allowed_network_is_delivered_to_with_a_valid_signature(allow_loopback):
    payload = {"event": "budget.hard_limit", "id": "notice_1", "figures": {"spent_usd": "20"}}
    with receiver() as server:
        status = deliver(f"http://127.0.0.1:{server.server_port}/hooks?x=1", "s3cret", payload)
    assert status == 204
    [(headers, body)] = server.received
    assert headers["Content-Type"] == "application/json" and headers["User-Agent"] == "OpenClaw-Gateway"
    assert headers["X-OpenClaw-Event"] == "budget.hard_limit"
    assert body == webhooks.encode_body(payload)
    assert verify_signature("s3cret", headers["X-OpenClaw-Signature"], body)
    assert not verify_signature("wrong", headers["X-OpenClaw-Signature"], body)


def test_the_host_is_resolved_once_and_the_checked_address_is_the_one_called(settings, monkeypatch):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    lookups = []
    real_getaddrinfo = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):
        lookups.append(host)
        return real_getaddrinfo("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", fake_getaddrinfo)
    with receiver() as server:
        deliver(f"http://hooks.example.test:{server.server_port}/", "s", {"event": "budget.soft_threshold"})
    assert lookups == ["hooks.example.test"]
    assert server.received[0][0]["Host"] == f"hooks.example.test:{server.server_port}"


def test_the_allow_list_is_exact(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    with receiver() as server, pytest.raises(WebhookRefused):
        deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})
    assert server.received == []


def test_a_redirect_is_a_failure_and_not_followed(allow_loopback):
    with receiver("redirect") as server, pytest.raises(WebhookFailed, match="302") as failed:
        deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})
    assert failed.value.status == 302 and len(server.received) == 1


def test_a_non_2xx_answer_is_a_failure(allow_loopback):
    with receiver("error") as server, pytest.raises(WebhookFailed, match="500"):
        deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})


def test_a_slow_receiver_times_out(allow_loopback, monkeypatch):
    monkeypatch.setattr(webhooks, "READ_TIMEOUT", 0.3)
    with receiver("slow") as server:
        started = time.monotonic()
        with pytest.raises(WebhookFailed, match="did not answer within"):
            deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})
        assert time.monotonic() - started < 1.5


def test_a_receiver_dripping_its_answer_is_cut_off_at_the_total_timeout(allow_loopback, monkeypatch):
    monkeypatch.setattr(webhooks, "READ_TIMEOUT", 0.5)  # each byte arrives within it; the answer does not
    with receiver("drip") as server:
        started = time.monotonic()
        with pytest.raises(WebhookFailed):
            deliver(f"http://127.0.0.1:{server.server_port}/", "s", {})
        assert time.monotonic() - started < 2


def test_nothing_listening_is_a_retryable_failure(allow_loopback):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(WebhookFailed):
        deliver(f"http://127.0.0.1:{port}/", "s", {})


def test_https_checks_the_certificate(allow_loopback, tmp_path):
    import ssl

    cert, key = _self_signed(tmp_path, "localhost")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.behaviour, server.received = "ok", []
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with pytest.raises(WebhookFailed, match="certificate"):
            deliver(f"https://127.0.0.1:{server.server_address[1]}/", "s", {})
    finally:
        server.shutdown()
        server.server_close()
    assert server.received == []


def _self_signed(tmp_path, name):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


# --- the delivery task ----------------------------------------------------------------------

def test_the_delivery_task_stamps_the_notice_and_skips_it_afterwards(budget, allow_loopback, no_webhook_task):
    org = budget.org
    with receiver() as server:
        org.webhook_url = f"http://127.0.0.1:{server.server_port}/hook"
        org.save()
        send(budget, kind="hard")
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
    send(budget)
    retries = []
    monkeypatch.setattr(tasks.deliver_budget_webhook, "retry", lambda *a, **k: retries.append(1))
    result = tasks.deliver_budget_webhook.apply(args=[BudgetNotice.objects.get().pk]).get()
    assert result["status"] == "refused" and retries == []
    assert BudgetNotice.objects.get().webhook_delivered_at is None
