"""Accepting an invitation (tenants/views/invitations.py): the emailed link lets the
invited person choose a password and signs them in; a bad or used link explains itself."""
import re

import pytest
from django.core import mail
from django.urls import reverse

from tenants.models import AuditEvent
from tenants.services import membership_invite
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def invited(db, django_capture_on_commit_callbacks):
    personas = make_personas()
    with django_capture_on_commit_callbacks(execute=True):
        membership = membership_invite(org=personas.org, email="erin@example.com", role="member",
                                       invited_by=personas.users["owner"], base_url="http://testserver")
    link = re.search(r"http://testserver(/accounts/invitation/\S+/)", mail.outbox[0].body).group(1)
    return membership, link


def test_the_link_sets_a_password_and_signs_the_person_in(client, invited):
    membership, link = invited
    page = client.get(link)
    assert page.status_code == 200 and "erin@example.com" in page.content.decode()
    assert page["Referrer-Policy"] == "same-origin"
    response = client.post(link, {"new_password1": "correct-horse-battery", "new_password2": "correct-horse-battery"})
    assert response.status_code == 302 and response["Location"] == reverse("home")
    assert client.get(reverse("home"))["Location"] == reverse("overview", kwargs={"org": "acme"})
    membership.user.refresh_from_db()
    assert membership.user.check_password("correct-horse-battery")
    assert AuditEvent.objects.filter(action="membership.invitation_accept", actor="erin@example.com").count() == 1


def test_the_link_works_once(client, invited):
    _, link = invited
    client.post(link, {"new_password1": "correct-horse-battery", "new_password2": "correct-horse-battery"})
    client.logout()
    response = client.get(link)
    assert response.status_code == 400 and "no longer works" in response.content.decode()


def test_mismatched_passwords_are_explained(client, invited):
    membership, link = invited
    response = client.post(link, {"new_password1": "correct-horse-battery", "new_password2": "other-horse"})
    assert response.status_code == 400 and "didn’t match" in response.content.decode()
    membership.user.refresh_from_db()
    assert not membership.user.has_usable_password()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("link", [
    "/accounts/invitation/xx/yy/",
    "/accounts/invitation/MQ/abc-123/",
    "/accounts/invitation/%F0%9F%92%A9/abc/",
])
def test_a_bad_link_gets_a_clear_page(client, db, link):
    response = client.get(link)
    assert response.status_code == 400 and "no longer works" in response.content.decode()
    assert client.post(link, {"new_password1": "a", "new_password2": "a"}).status_code == 400
