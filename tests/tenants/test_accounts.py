"""Signing in to the dashboard, out, and resetting a password (tenants/urls_accounts.py,
templates/accounts/): lockout after repeated failures, every login audited."""
import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from tenants.auth_audit import failure_audit
from tenants.models import AuditEvent, Membership, Organization

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"
LOGIN = "/accounts/login/"


@pytest.fixture
def alice(db, settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    org = Organization.objects.create(slug="acme", name="Acme Inc.")
    user = get_user_model().objects.create_user("alice", "alice@example.com", PASSWORD)
    Membership.objects.create(org=org, user=user, role="member")
    return user


def log_in(client, password, username="alice", address="198.51.100.7", next_url=""):
    return client.post(LOGIN, {"username": username, "password": password, "next": next_url}, REMOTE_ADDR=address)


def test_the_login_page_is_styled_and_links_to_password_reset(client):
    page = client.get(LOGIN)
    html = page.content.decode()
    assert page.status_code == 200 and "Sign in" in html
    stylesheet = re.search(r'<link rel="stylesheet" href="([^"]+)"', html).group(1)
    assert stylesheet == "/static/openclaw/dashboard.css"
    assert client.get(stylesheet).status_code == 200
    assert 'href="/accounts/password-reset/"' in html and "Forgot your password?" in html
    assert client.get("/accounts/password-reset/").status_code == 200


def test_the_admins_stylesheet_is_served_too(client):
    assert client.get("/static/admin/css/base.css").status_code == 200


def test_every_page_has_the_icon_and_browsers_asking_for_favicon_ico_get_it(client):
    html = client.get("/accounts/login/").content.decode()
    icon = re.search(r'<link rel="icon" href="([^"]+)"', html).group(1)
    assert icon == "/static/openclaw/favicon.svg"
    assert client.get(icon).status_code == 200
    answer = client.get("/favicon.ico")
    assert answer.status_code == 301 and answer.headers["Location"] == icon


def test_the_right_password_leads_to_the_overview_and_is_audited(client, alice):
    answer = log_in(client, PASSWORD)
    assert answer.status_code == 302 and answer.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 302 and home.headers["Location"] == "/orgs/acme/"
    assert client.get("/orgs/acme/").status_code == 200
    event = AuditEvent.objects.get(action="login")
    assert (event.chain, event.actor, event.data) == ("platform", "alice",
                                                     {"address": "198.51.100.7", "source": "dashboard"})


def test_it_returns_to_the_page_asked_for(client, alice):
    assert client.get("/orgs/acme/").headers["Location"] == "/accounts/login/?next=/orgs/acme/"
    answer = log_in(client, PASSWORD, next_url="/orgs/acme/")
    assert answer.headers["Location"] == "/orgs/acme/"


def test_a_wrong_password_says_so_and_is_audited(client, alice):
    answer = log_in(client, "hunter2-guess")
    assert answer.status_code == 200 and "Wrong username or password" in answer.content.decode()
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action="login_failed")
    assert event.data["source"] == "dashboard" and "hunter2" not in str(event.data)


def test_five_failures_lock_the_username_out_at_that_address_with_a_clear_page(client, alice, settings):
    answers = [log_in(client, f"wrong-{n}") for n in range(settings.AXES_FAILURE_LIMIT + 2)]
    assert [a.status_code for a in answers] == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429] * 3
    refused = log_in(client, PASSWORD)
    html = refused.content.decode()
    assert refused.status_code == 429 and "Too many failed logins" in html and "locked out for 15 minutes" in html
    assert "/static/openclaw/dashboard.css" in html and 'href="/accounts/password-reset/"' in html
    assert "_auth_user_id" not in client.session
    assert [e.data["source"] for e in AuditEvent.objects.filter(action="login_locked_out")] == ["dashboard"]
    failure_audit.write_all()
    assert AuditEvent.objects.get(action="login_locked_out.summary").data["failures"] == 3
    assert log_in(client, PASSWORD, address="198.51.100.8").status_code == 302  # another address


def test_signing_out_takes_a_post_and_ends_the_session(client, alice):
    log_in(client, PASSWORD)
    assert client.get("/accounts/logout/").status_code == 405
    answer = client.post("/accounts/logout/")
    assert answer.status_code == 302 and answer.headers["Location"] == LOGIN
    assert client.get("/orgs/acme/").status_code == 302


def test_a_password_reset_email_carries_a_link_that_sets_a_new_password(client, alice):
    answer = client.post("/accounts/password-reset/", {"email": "alice@example.com"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/accounts/password-reset/sent/"
    assert "Check your email" in client.get(answer.headers["Location"]).content.decode()
    [message] = mail.outbox
    assert message.to == ["alice@example.com"] and "alice" in message.body
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", message.body).group(1)
    form = client.get(link, follow=True)
    assert form.status_code == 200 and "Choose a new password" in form.content.decode()
    set_url = form.redirect_chain[-1][0]
    too_short = client.post(set_url, {"new_password1": "short", "new_password2": "short"})
    assert too_short.status_code == 200 and "too short" in too_short.content.decode()
    assert not AuditEvent.objects.filter(action="password.reset").exists()
    done = client.post(set_url, {"new_password1": "a-new-long-secret", "new_password2": "a-new-long-secret"})
    assert done.status_code == 302 and done.headers["Location"] == "/accounts/reset/done/"
    event = AuditEvent.objects.get(action="password.reset")
    assert (event.chain, event.actor, event.target_id) == ("platform", "alice", str(alice.pk))
    assert "a-new-long-secret" not in str(event.data)
    assert "Password changed" in client.get("/accounts/reset/done/").content.decode()
    assert log_in(client, "a-new-long-secret").status_code == 302
    client.post("/accounts/logout/")
    used = client.get(link, follow=True)
    assert "This link does not work" in used.content.decode()


def test_an_unknown_address_gets_the_same_answer_and_no_email(client, alice):
    answer = client.post("/accounts/password-reset/", {"email": "nobody@example.com"})
    assert answer.status_code == 302 and answer.headers["Location"] == "/accounts/password-reset/sent/"
    assert mail.outbox == []


def test_a_malformed_address_is_a_form_error(client, alice):
    answer = client.post("/accounts/password-reset/", {"email": "not an address"})
    assert answer.status_code == 200 and "Enter a valid email address" in answer.content.decode()


def test_an_org_admin_who_is_not_staff_gets_the_admin_login_not_an_error(client, alice):
    client.force_login(alice)
    answer = client.get("/admin/")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/admin/login/")
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200


@pytest.mark.parametrize("page", [LOGIN, "/accounts/password-reset/", "/accounts/password-reset/sent/",
                                  "/accounts/reset/done/", "/accounts/reset/MQ/bad-token/"])
def test_every_link_on_the_signed_out_pages_leads_somewhere(client, page):
    answer = client.get(page, follow=True)
    assert answer.status_code == 200
    html = answer.content.decode()
    links = set(re.findall(r'(?:href|src)="(/[^"]*)"', html))
    assert links, page
    for link in links:
        assert client.get(link).status_code == 200, (page, link)
