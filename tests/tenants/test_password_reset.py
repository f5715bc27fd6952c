"""Password-reset requests are limited per email address and per client address
(tenants/password_reset.py): past a limit no email is sent, the answer is a 429 page that
says nothing about the account, and each window's first refusal is audited."""
import re
import time

import django_ratelimit.core
import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from tenants.auth_audit import failure_audit
from tenants.models import AuditEvent
from tenants.password_reset import WINDOW_SECONDS

pytestmark = pytest.mark.django_db

RESET = "/accounts/password-reset/"
SENT = "/accounts/password-reset/sent/"


class Clock:
    """What the limiter reads as the time: frozen, moved on by the tests."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def time(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    frozen = Clock()
    monkeypatch.setattr(django_ratelimit.core, "time", frozen)
    return frozen


@pytest.fixture
def alice(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return get_user_model().objects.create_user("alice", "alice@example.com", "correct-horse-battery")


def ask(client, email, address="198.51.100.7", **headers):
    return client.post(RESET, {"email": email}, REMOTE_ADDR=address, **headers)


def ask_from_addresses(client, email, times):
    """`times` requests for `email`, each from its own client address."""
    return [ask(client, email, address=f"198.51.100.{n + 1}") for n in range(times)]


def refused_text(answer) -> str:
    # The minutes left depend on the window of what was counted, never on an account.
    return re.sub(r"\d+ minutes?", "N minutes", answer.content.decode())


def test_past_the_email_limit_no_email_is_sent_and_the_page_says_so(client, alice, settings):
    assert settings.PASSWORD_RESET_PER_EMAIL_HOUR == 3
    answers = ask_from_addresses(client, "alice@example.com", 3)
    assert [(a.status_code, a.headers["Location"]) for a in answers] == [(302, SENT)] * 3
    assert len(mail.outbox) == 3
    refused = ask(client, "Alice@Example.com", address="203.0.113.9")  # another case, another address
    html = refused.content.decode()
    assert refused.status_code == 429 and len(mail.outbox) == 3
    assert "Too many password reset requests: no email was sent" in html and "Try again in" in html
    assert "/static/openclaw/dashboard.css" in html and 'href="/accounts/login/"' in html
    assert 0 < int(refused.headers["Retry-After"]) <= WINDOW_SECONDS


def test_another_email_still_gets_its_link(client, alice):
    ask_from_addresses(client, "bob@example.com", 4)
    assert ask(client, "alice@example.com").status_code == 302
    assert [message.to for message in mail.outbox] == [["alice@example.com"]]


def test_past_the_client_address_limit_every_email_is_refused_there_and_nowhere_else(client, alice, settings):
    settings.PASSWORD_RESET_PER_IP_HOUR = 4
    answers = [ask(client, f"user{n}@example.com") for n in range(4)]
    assert [a.status_code for a in answers] == [302] * 4
    assert ask(client, "alice@example.com").status_code == 429
    assert ask(client, "not an address").status_code == 429  # refused before the form is read
    # X-Forwarded-For from a peer that is not a trusted proxy is the client's own writing.
    assert ask(client, "alice@example.com", HTTP_X_FORWARDED_FOR="192.0.2.1").status_code == 429
    assert mail.outbox == []
    assert ask(client, "alice@example.com", address="198.51.100.8").status_code == 302
    assert len(mail.outbox) == 1  # the refusals did not count against alice's address either


def test_an_unknown_email_is_limited_the_same_way_and_the_answers_cannot_tell_them_apart(client, alice):
    known = ask_from_addresses(client, "alice@example.com", 5)
    unknown = ask_from_addresses(client, "nobody@example.com", 5)
    assert [a.status_code for a in known] == [a.status_code for a in unknown] == [302] * 3 + [429] * 2
    assert [a.headers.get("Location") for a in known] == [a.headers.get("Location") for a in unknown]
    assert [refused_text(a) for a in known[3:]] == [refused_text(a) for a in unknown[3:]]
    assert [message.to for message in mail.outbox] == [["alice@example.com"]] * 3


def test_each_window_audits_its_first_refusal_once(client, alice, clock):
    assert [a.status_code for a in ask_from_addresses(client, "alice@example.com", 6)] == [302] * 3 + [429] * 3
    event = AuditEvent.objects.get(action="password_reset_throttled")
    assert (event.chain, event.actor) == ("platform", "alice@example.com")
    assert event.data == {"reason": "too many reset emails to one address", "source": "dashboard",
                          "address": "198.51.100.4"}
    clock.now += WINDOW_SECONDS
    assert [a.status_code for a in ask_from_addresses(client, "alice@example.com", 6)] == [302] * 3 + [429] * 3
    # The next window's first refusal joins the burst the first one opened (tenants/auth_audit.py).
    assert AuditEvent.objects.filter(action__startswith="password_reset_throttled").count() == 1
    failure_audit.write_all()
    summary = AuditEvent.objects.get(action="password_reset_throttled.summary")
    assert summary.data["failures"] == 1 and summary.data["names"] == ["alice@example.com"]
    assert summary.data["message"].startswith("1 password-reset limit hit (too many reset emails to one address)")


def test_the_client_address_limit_is_audited_with_its_own_reason(client, alice, settings):
    settings.PASSWORD_RESET_PER_IP_HOUR = 1
    for n in range(3):
        ask(client, f"user{n}@example.com", address="2001:db8::1")
    event = AuditEvent.objects.get(action="password_reset_throttled")
    assert event.data["reason"] == "too many reset requests from one client address" and event.actor == ""
    assert event.data["address"] == "2001:db8::1"


def test_the_limits_start_again_after_the_hour(client, alice, clock):
    assert [a.status_code for a in ask_from_addresses(client, "alice@example.com", 4)] == [302] * 3 + [429]
    clock.now += WINDOW_SECONDS
    assert ask(client, "alice@example.com").status_code == 302
    assert len(mail.outbox) == 4
