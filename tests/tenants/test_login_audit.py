"""Admin login (tenants/login_audit.py; the dashboard's in tests/tenants/test_accounts.py): locked out after repeated failures (django-axes),
every login audited, failures as bursts."""
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model

from tenants.audit import verify_chain
from tenants.auth_audit import failure_audit
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def operator(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # 80 logins, quickly
    return get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)


def log_in(client, password, username="operator", address="198.51.100.7"):
    return client.post(LOGIN, {"username": username, "password": password, "next": "/admin/"},
                       REMOTE_ADDR=address)


def logged_in(response) -> bool:
    return response.status_code == 302 and response.headers["Location"] == "/admin/"


def test_the_right_password_logs_in_and_is_audited(client, operator):
    assert logged_in(log_in(client, PASSWORD))
    event = AuditEvent.objects.get(action="login")
    assert (event.chain, event.actor, event.actor_type, event.data) == (
        "platform", "operator", "user", {"address": "198.51.100.7", "source": "admin"})
    assert client.get("/admin/").status_code == 200


def test_fifty_wrong_passwords_lock_the_username_out_at_that_address(client, operator, settings):
    limit = settings.AXES_FAILURE_LIMIT
    answers = [log_in(client, f"wrong-{n}") for n in range(50)]
    assert all(a.status_code == 200 for a in answers[:limit - 1])  # the form again, with its error
    assert all(a.status_code == 429 for a in answers[limit - 1:])
    assert "locked out for 15 minutes" in answers[-1].content.decode()
    # Now even the right password is refused, with the same clear answer.
    refused = log_in(client, PASSWORD)
    assert refused.status_code == 429 and "Too many failed logins" in refused.content.decode()
    assert not AuditEvent.objects.filter(action="login").exists()
    # The same username from another address, and another username here, are not locked out.
    assert logged_in(log_in(client, PASSWORD, address="198.51.100.8"))


def test_the_lockout_ends_after_the_cool_off(client, operator, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(client, f"wrong-{n}")
    assert log_in(client, PASSWORD).status_code == 429
    AccessAttempt.objects.update(attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16))
    assert logged_in(log_in(client, PASSWORD))


def test_failures_and_lockouts_are_audited_as_bursts_not_a_row_each(client, operator):
    for n in range(50):
        log_in(client, f"wrong-{n}")
    log_in(client, PASSWORD)
    for n in range(30):  # a password spray: other usernames, from the same address
        log_in(client, "guess", username=f"user{n}")
    rows = list(AuditEvent.objects.filter(chain="platform", action__startswith="login").order_by("seq"))
    assert [(e.action, e.actor) for e in rows] == [("login_failed", "operator"),
                                                   ("login_locked_out", "operator")]
    assert failure_audit.write_all() == 2
    summaries = {e.action: e for e in AuditEvent.objects.filter(action__endswith=".summary")}
    failed, locked = summaries["login_failed.summary"], summaries["login_locked_out.summary"]
    assert failed.data["failures"] + 1 == 4 + 30  # 4 wrong passwords before the lockout, then the spray
    assert locked.data["failures"] + 1 == 50 - 4 + 1  # every attempt while locked out, the right password too
    assert failed.data["addresses"] == ["198.51.100.7"] and "operator" not in failed.actor
    assert "user0" in failed.data["names"]
    stored = " ".join(str(e.data) for e in AuditEvent.objects.all())
    assert "wrong-" not in stored and PASSWORD not in stored and "guess" not in stored
    assert verify_chain("platform") == (True, None)


@pytest.mark.parametrize("username,agent,named", [
    ("oper\x00ator", "browser", "form field username.0: must not contain NUL"),
    ("operator", "agent\x00", "header User-Agent: must not contain NUL"),
])
def test_text_that_cannot_be_stored_is_a_plain_400_not_a_server_error(client, operator, username, agent, named):
    """The lockout and the audit store parts of a failed login (the username typed, the
    user agent): PostgreSQL refuses NUL, so such a request is refused before any view."""
    answer = client.post(LOGIN, {"username": username, "password": "wrong", "next": "/admin/"},
                         REMOTE_ADDR="198.51.100.9", HTTP_USER_AGENT=agent)
    assert answer.status_code == 400 and named in answer.content.decode()
    assert not AccessAttempt.objects.exists()
    assert client.get("/admin/login/?next=%00").status_code == 400
