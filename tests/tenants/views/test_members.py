"""The members pages (tenants/views/members.py): list, invite, change role, remove; the
last owner stays and only owners change owners."""
import pytest
from django.core import mail
from django.urls import reverse

from tenants.models import AuditEvent, Membership
from tests.support.personas import make_personas, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def personas(db):
    return make_personas()


def _url(personas, name, **kwargs):
    return reverse(name, kwargs={"org": personas.org.slug, **kwargs})


def _membership(personas, persona):
    return Membership.objects.get(org=personas.org, user=personas.users[persona])


def test_the_list_shows_the_orgs_members_with_their_roles(client, personas):
    page = personas.client_for(client, "auditor").get(_url(personas, "members")).content.decode()
    for role in ("owner", "admin", "auditor", "member"):
        assert f"{role}-acme" in page and f"role-{role}" in page
    assert "outsider-acme" not in page  # a member of another org
    assert "Invite" not in page  # auditors read only


def test_the_list_costs_a_bounded_number_of_queries(client, personas, django_assert_max_num_queries):
    for n in range(50):
        Membership.objects.create(org=personas.org, user=make_user(f"person{n:02}"), role="member")
    personas.client_for(client, "admin")
    with django_assert_max_num_queries(7):
        response = client.get(_url(personas, "members"))
    assert response.content.decode().count("person") >= 50


# --- invite ------------------------------------------------------------------------------------

def test_inviting_sends_an_email_and_audits_it(client, personas, django_capture_on_commit_callbacks):
    personas.client_for(client, "admin")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url(personas, "member_invite"), {"email": "dana@example.com", "role": "auditor"})
    membership = Membership.objects.get(org=personas.org, user__email="dana@example.com")
    assert response.status_code == 302 and response["Location"] == _url(personas, "member_detail",
                                                                          member=membership.public_id)
    assert membership.role == "auditor"
    [message] = mail.outbox
    assert message.to == ["dana@example.com"] and "http://testserver/accounts/invitation/" in message.body
    event = AuditEvent.objects.get(action="membership.invite")
    assert (event.actor, event.data["email"]) == ("admin-acme", "dana@example.com")
    assert "Invitation sent to dana@example.com" in client.get(response["Location"]).content.decode()


@pytest.mark.parametrize("data,error", [
    ({"email": "", "role": "member"}, "This field is required"),
    ({"email": "not-an-email", "role": "member"}, "Enter a valid email address"),
    ({"email": "x@example.com", "role": "king"}, "Select a valid choice"),
    ({"email": "member-acme@example.com", "role": "member"}, "already a member"),
])
def test_the_invite_form_explains_bad_input(client, personas, data, error):
    response = personas.client_for(client, "owner").post(_url(personas, "member_invite"), data)
    assert response.status_code == 400 and error in response.content.decode()
    assert not AuditEvent.objects.filter(action="membership.invite").exists()
    assert mail.outbox == []


def test_admins_are_not_offered_the_owner_role(client, personas):
    personas.client_for(client, "admin")
    assert 'value="owner"' not in client.get(_url(personas, "member_invite")).content.decode()
    response = client.post(_url(personas, "member_invite"), {"email": "boss@example.com", "role": "owner"})
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert not Membership.objects.filter(user__email="boss@example.com").exists()


# --- change role ---------------------------------------------------------------------------------

def test_changing_a_role_is_audited(client, personas):
    member = _membership(personas, "member")
    response = personas.client_for(client, "admin").post(_url(personas, "member_detail", member=member.public_id),
                                                          {"role": "auditor"})
    assert response.status_code == 302
    assert Membership.objects.get(pk=member.pk).role == "auditor"
    event = AuditEvent.objects.get(action="membership.role_set")
    assert (event.actor, event.target_id) == ("admin-acme", str(member.public_id))


def test_the_role_form_explains_bad_input(client, personas):
    member = _membership(personas, "member")
    response = personas.client_for(client, "owner").post(_url(personas, "member_detail", member=member.public_id),
                                                          {"role": "emperor"})
    assert response.status_code == 400 and "Select a valid choice" in response.content.decode()
    assert Membership.objects.get(pk=member.pk).role == "member"


def test_the_last_owner_cannot_demote_themselves(client, personas):
    owner = _membership(personas, "owner")
    response = personas.client_for(client, "owner").post(_url(personas, "member_detail", member=owner.public_id),
                                                          {"role": "admin"})
    assert response.status_code == 400 and "last owner" in response.content.decode()
    assert Membership.objects.get(pk=owner.pk).role == "owner"
    assert not AuditEvent.objects.filter(action="membership.role_set").exists()


def test_an_admin_sees_no_forms_for_an_owner_and_cannot_change_one(client, personas):
    owner = _membership(personas, "owner")
    personas.client_for(client, "admin")
    page = client.get(_url(personas, "member_detail", member=owner.public_id)).content.decode()
    assert "remove-form" not in page and "Only an owner can change" in page
    response = client.post(_url(personas, "member_detail", member=owner.public_id), {"role": "member"})
    assert response.status_code == 400 and "Only an owner can grant" in response.content.decode()
    assert Membership.objects.get(pk=owner.pk).role == "owner"


def test_another_orgs_member_is_not_found(client, personas):
    outsider = Membership.objects.get(user=personas.users["outsider"])
    personas.client_for(client, "owner")
    assert client.get(_url(personas, "member_detail", member=outsider.public_id)).status_code == 404
    assert client.post(_url(personas, "member_remove", member=outsider.public_id)).status_code == 404
    assert Membership.objects.filter(pk=outsider.pk).exists()


# --- remove ------------------------------------------------------------------------------------

def test_removing_a_member_is_confirmed_and_audited(client, personas):
    member = _membership(personas, "member")
    personas.client_for(client, "admin")
    page = client.get(_url(personas, "member_detail", member=member.public_id)).content.decode()
    assert 'id="remove-form"' in page and "data-confirm=" in page
    response = client.post(_url(personas, "member_remove", member=member.public_id))
    assert response.status_code == 302 and response["Location"] == _url(personas, "members")
    assert not Membership.objects.filter(pk=member.pk).exists()
    assert AuditEvent.objects.get(action="membership.remove").actor == "admin-acme"


def test_the_last_owner_cannot_be_removed(client, personas):
    owner = _membership(personas, "owner")
    personas.client_for(client, "owner")
    response = client.post(_url(personas, "member_remove", member=owner.public_id), follow=True)
    assert "last owner" in response.content.decode()
    assert Membership.objects.filter(pk=owner.pk).exists()
    assert not AuditEvent.objects.filter(action="membership.remove").exists()


def test_a_member_who_removes_themselves_goes_home(client, personas):
    admin = _membership(personas, "admin")
    response = personas.client_for(client, "admin").post(_url(personas, "member_remove", member=admin.public_id))
    assert response.status_code == 302 and response["Location"] == reverse("home")
