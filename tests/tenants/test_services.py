"""Issuing and revoking API keys (tenants/services.py): only a digest is stored, the key
shown once; each change and its audit event are written together or not at all."""
import pytest

from tenants.access import authenticate_api_key
from tenants.audit import verify_chain
from tenants.models import ApiKey, AuditEvent
from tenants.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


def test_it_stores_only_the_digest_and_shows_the_key_once(org):
    issued = api_key_create(org=org, name="k")
    row = ApiKey.objects.get(pk=issued.api_key.pk)
    stored = " ".join(str(getattr(row, f.attname)) for f in ApiKey._meta.fields)
    assert issued.raw not in stored
    secret = issued.raw[len("ocw_") + 10 + 1:]
    assert len(secret) == 43 and secret not in stored
    assert row.display.endswith(issued.raw[-4:])


def test_create_and_revoke_write_audit_events_in_the_same_transaction(org):
    issued = api_key_create(org=org, name="k")
    api_key_revoke(api_key=issued.api_key)
    api_key_revoke(api_key=issued.api_key)  # idempotent: one event
    actions = list(AuditEvent.objects.filter(org=org).values_list("action", flat=True))
    assert actions == ["org.create", "api_key.create", "api_key.revoke"]
    assert verify_chain(str(org.public_id)) == (True, None)


class AuditWriteFailed(Exception):
    pass


@pytest.fixture
def failing_audit(monkeypatch):
    """Make the audit write fail, as a full disk or a lost connection would."""
    def record_event(**event):
        raise AuditWriteFailed(event["action"])

    monkeypatch.setattr("tenants.services.record_event", record_event)


def test_a_key_whose_audit_event_fails_is_not_created(org, failing_audit):
    keys_before = ApiKey.objects.count()
    with pytest.raises(AuditWriteFailed, match="api_key.create"):
        api_key_create(org=org, name="unaudited")
    assert ApiKey.objects.count() == keys_before
    assert not ApiKey.objects.filter(name="unaudited").exists()


def test_a_revocation_whose_audit_event_fails_leaves_the_key_working(issued_key, failing_audit):
    # (issued_key is set up first, while its own create event can still be written.)
    with pytest.raises(AuditWriteFailed, match="api_key.revoke"):
        api_key_revoke(api_key=issued_key.api_key)
    assert ApiKey.objects.get(pk=issued_key.api_key.pk).revoked_at is None
    assert authenticate_api_key(issued_key.raw).key_prefix == issued_key.api_key.prefix


# --- Keys issued by a person, rotation ---------------------------------------------------
from datetime import timedelta  # noqa: E402

from django.core import mail  # noqa: E402
from django.utils import timezone  # noqa: E402

from tenants.hooks import resolvable_names  # noqa: E402
from tenants.models import Membership  # noqa: E402
from tenants.services import (  # noqa: E402
    ChangeRefused,
    api_key_rotate,
    membership_invite,
    membership_remove,
    membership_role_set,
)
from tests.support.personas import make_personas, make_user  # noqa: E402


def test_a_key_created_by_a_person_keeps_its_limits_and_names_the_person(org):
    user = make_user("olivia")
    expires = timezone.now() + timedelta(days=30)
    issued = api_key_create(org=org, name="bot", allowed_models=["mock-fast"], rpm_limit=60, tpm_limit=10_000,
                            max_tokens_per_request=500, expires_at=expires, created_by=user)
    principal = authenticate_api_key(issued.raw)
    assert (principal.key_rpm_limit, principal.key_tpm_limit, principal.allowed_models) == (60, 10_000, ("mock-fast",))
    assert issued.api_key.created_by == user
    event = AuditEvent.objects.get(action="api_key.create")
    assert (event.actor_type, event.actor) == ("user", "olivia")
    assert event.data["rpm_limit"] == 60 and event.data["allowed_models"] == ["mock-fast"]


def test_rotation_issues_a_key_with_the_same_settings_and_the_old_one_works_during_the_overlap(org):
    user = make_user("olivia")
    old = api_key_create(org=org, name="bot", allowed_models=["a", "b"], rpm_limit=5, tpm_limit=50,
                         max_tokens_per_request=9)
    before = timezone.now()
    new = api_key_rotate(api_key=old.api_key, overlap=timedelta(hours=1), actor_user=user)
    assert new.raw != old.raw and new.api_key.rotated_from_id == old.api_key.pk
    assert (new.api_key.allowed_models, new.api_key.rpm_limit, new.api_key.tpm_limit,
            new.api_key.max_tokens_per_request, new.api_key.name) == (["a", "b"], 5, 50, 9, "bot")
    old_row = ApiKey.objects.get(pk=old.api_key.pk)
    assert before + timedelta(minutes=59) < old_row.expires_at <= timezone.now() + timedelta(hours=1)
    assert authenticate_api_key(old.raw) and authenticate_api_key(new.raw)
    event = AuditEvent.objects.get(action="api_key.rotate")
    assert (event.actor, event.target_id, event.data["new_key_id"]) == (
        "olivia", str(old.api_key.public_id), str(new.api_key.public_id))
    assert verify_chain(str(org.public_id)) == (True, None)


def test_rotation_never_extends_the_old_keys_expiry(org):
    soon = timezone.now() + timedelta(minutes=10)
    old = api_key_create(org=org, name="bot", expires_at=soon)
    api_key_rotate(api_key=old.api_key, overlap=timedelta(days=7))
    assert ApiKey.objects.get(pk=old.api_key.pk).expires_at == soon


def test_a_zero_overlap_stops_the_old_key_at_once(org):
    old = api_key_create(org=org, name="bot")
    api_key_rotate(api_key=old.api_key, overlap=timedelta(0))
    with pytest.raises(Exception, match="expired"):
        authenticate_api_key(old.raw)


@pytest.mark.parametrize("state,message", [
    ("revoked", "revoked"), ("expired", "expired"), ("rotated", "already rotated"), ("playground", "Playground"),
])
def test_rotation_refuses_a_key_that_cannot_be_rotated(org, state, message):
    issued = api_key_create(org=org, name="k", kind=ApiKey.Kind.PLAYGROUND if state == "playground" else "application")
    if state == "revoked":
        api_key_revoke(api_key=issued.api_key)
    elif state == "expired":
        ApiKey.objects.filter(pk=issued.api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    elif state == "rotated":
        api_key_rotate(api_key=issued.api_key, overlap=timedelta(hours=1))
    keys_before = ApiKey.objects.count()
    with pytest.raises(ChangeRefused, match=message):
        api_key_rotate(api_key=issued.api_key, overlap=timedelta(hours=1))
    assert ApiKey.objects.count() == keys_before


def test_revocation_by_a_person_is_audited_as_that_person(issued_key):
    user = make_user("olivia")
    api_key_revoke(api_key=issued_key.api_key, actor_user=user)
    event = AuditEvent.objects.get(action="api_key.revoke")
    assert (event.actor_type, event.actor) == ("user", "olivia")


def test_resolvable_names_list_the_orgs_and_platform_deployments_and_routes(org, other_org, make_deployment):
    from catalog.models import Route

    make_deployment("platform-model")
    make_deployment("acme-model", org=org)
    make_deployment("globex-model", org=other_org)
    make_deployment("disabled-model", enabled=False)
    Route.objects.create(alias="best", org=None)
    Route.objects.create(alias="acme-route", org=org)
    Route.objects.create(alias="globex-route", org=other_org)
    assert resolvable_names(org) == ["acme-model", "acme-route", "best", "platform-model"]


# --- Members ---------------------------------------------------------------------------------

@pytest.fixture
def personas(db):
    return make_personas()


def _membership(personas, persona):
    return Membership.objects.get(org=personas.org, user=personas.users[persona])


def test_the_last_owner_can_be_neither_demoted_nor_removed(personas):
    owner = _membership(personas, "owner")
    with pytest.raises(ChangeRefused, match="last owner"):
        membership_role_set(membership=owner, role="admin", actor_user=personas.users["owner"])
    with pytest.raises(ChangeRefused, match="last owner"):
        membership_remove(membership=owner, actor_user=personas.users["owner"])
    assert Membership.objects.get(pk=owner.pk).role == "owner"
    assert not AuditEvent.objects.filter(action__startswith="membership.").exists()


def test_with_two_owners_one_may_step_down_but_then_the_other_is_the_last(personas):
    owner = _membership(personas, "owner")
    admin = _membership(personas, "admin")
    membership_role_set(membership=admin, role="owner", actor_user=personas.users["owner"])
    membership_role_set(membership=owner, role="admin", actor_user=personas.users["owner"])
    # A stale copy that still says "owner" changes nothing: the service re-reads locked rows.
    admin.role = "owner"
    with pytest.raises(ChangeRefused, match="last owner"):
        membership_role_set(membership=admin, role="member", actor_user=personas.users["admin"])
    assert Membership.objects.filter(org=personas.org, role="owner").count() == 1


def test_role_changes_and_removals_are_audited(personas):
    member = _membership(personas, "member")
    membership_role_set(membership=member, role="auditor", actor_user=personas.users["admin"])
    event = AuditEvent.objects.get(action="membership.role_set")
    assert (event.actor, event.data["role"], event.data["previous_role"]) == ("admin-acme", "auditor", "member")
    membership_remove(membership=member, actor_user=personas.users["admin"])
    event = AuditEvent.objects.get(action="membership.remove")
    assert (event.actor, event.target_id, event.data["username"]) == ("admin-acme", str(member.public_id),
                                                                       "member-acme")
    assert not Membership.objects.filter(pk=member.pk).exists()


@pytest.mark.parametrize("action", ["promote to owner", "demote an owner", "remove an owner"])
def test_admins_may_not_grant_the_owner_role_nor_change_an_owner(personas, action):
    admin_user = personas.users["admin"]
    owner = _membership(personas, "owner")
    membership_role_set(membership=_membership(personas, "auditor"), role="owner", actor_user=personas.users["owner"])
    with pytest.raises(ChangeRefused, match="Only an owner"):
        if action == "promote to owner":
            membership_role_set(membership=_membership(personas, "member"), role="owner", actor_user=admin_user)
        elif action == "demote an owner":
            membership_role_set(membership=owner, role="member", actor_user=admin_user)
        else:
            membership_remove(membership=owner, actor_user=admin_user)
    assert Membership.objects.get(pk=owner.pk).role == "owner"


def test_members_and_auditors_may_not_manage_members(personas):
    with pytest.raises(ChangeRefused):
        membership_role_set(membership=_membership(personas, "member"), role="admin",
                            actor_user=personas.users["auditor"])


def test_inviting_a_new_person_creates_an_account_without_a_password_and_emails_a_link(
        personas, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        membership = membership_invite(org=personas.org, email="New.Person@Example.com", role="auditor",
                                       invited_by=personas.users["owner"], base_url="https://gw.example/")
    user = membership.user
    assert (user.username, user.email, user.has_usable_password(), membership.role) == (
        "New.Person@example.com", "New.Person@example.com", False, "auditor")
    [message] = mail.outbox
    assert message.to == ["New.Person@example.com"] and "Acme Inc." in message.subject
    assert "https://gw.example/accounts/invitation/" in message.body
    event = AuditEvent.objects.get(action="membership.invite")
    assert (event.actor, event.data["role"], event.data["user_created"]) == ("owner-acme", "auditor", True)


def test_inviting_someone_with_an_account_adds_them_and_sends_a_notice_without_a_link(
        personas, django_capture_on_commit_callbacks):
    existing = make_user("carol", email="carol@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        membership = membership_invite(org=personas.org, email="CAROL@example.com", role="member",
                                       invited_by=personas.users["admin"], base_url="https://gw.example")
    assert membership.user == existing
    [message] = mail.outbox
    assert "/accounts/invitation/" not in message.body and "https://gw.example/" in message.body


def test_inviting_a_member_again_is_refused_and_sends_nothing(personas, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        with pytest.raises(ChangeRefused, match="already a member"):
            membership_invite(org=personas.org, email=personas.users["member"].email, role="member",
                              invited_by=personas.users["owner"], base_url="http://x")
    assert mail.outbox == []
    assert not AuditEvent.objects.filter(action="membership.invite").exists()


def test_an_admin_may_not_invite_an_owner(personas):
    with pytest.raises(ChangeRefused, match="Only an owner"):
        membership_invite(org=personas.org, email="boss@example.com", role="owner",
                          invited_by=personas.users["admin"], base_url="http://x")
    assert not Membership.objects.filter(user__email="boss@example.com").exists()


@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(monkeypatch):
    """The owners' rows are locked while they are counted: the second demotion waits for
    the first to commit, then sees one owner left and is refused. (Without the lock both
    would count two owners and succeed: the hook below lets the second catch up if it can.)"""
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL (SQLite serialises every write anyway)")
    from tenants import services

    personas = make_personas()
    second = _membership(personas, "admin")
    Membership.objects.filter(pk=second.pk).update(role="owner")
    first = _membership(personas, "owner")
    second.refresh_from_db()

    both_inside = threading.Barrier(2)
    check = services._check_may_manage

    def check_then_wait_for_the_other(**kwargs):
        check(**kwargs)
        # With the lock the other thread cannot get here before this one commits: the
        # wait times out (and the barrier, broken, lets everyone through from then on).
        try:
            both_inside.wait(timeout=1)
        except threading.BrokenBarrierError:
            pass

    monkeypatch.setattr(services, "_check_may_manage", check_then_wait_for_the_other)
    outcomes = []

    def demote(membership):
        try:
            membership_role_set(membership=membership, role="member")
            outcomes.append("demoted")
        except ChangeRefused:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=demote, args=(m,)) for m in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["demoted", "refused"]
    assert Membership.objects.filter(org=personas.org, role="owner").count() == 1


def test_org_set_time_zone_refuses_an_unknown_zone_and_audits_a_change(org):
    from django.core.exceptions import ValidationError

    from tenants.models import AuditEvent
    from tenants.services import org_set_time_zone

    with pytest.raises(ValidationError):
        org_set_time_zone(org=org, time_zone="Europe/Atlantis")
    org_set_time_zone(org=org, time_zone="Asia/Kolkata", actor="ops")
    org_set_time_zone(org=org, time_zone="Asia/Kolkata", actor="ops")  # unchanged: no second event
    org.refresh_from_db()
    assert org.time_zone == "Asia/Kolkata"
    events = AuditEvent.objects.filter(org=org, action="org.time_zone")
    assert [(e.actor, e.data) for e in events] == [("ops", {"from": "UTC", "to": "Asia/Kolkata"})]
