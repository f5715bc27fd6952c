"""The API keys pages (tenants/views/keys.py): list, create (secret shown once), detail,
revoke (closes sockets through the access-revoked hook), rotate."""
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from tenants import hooks
from tenants.access import authenticate_api_key
from tenants.models import ApiKey, AuditEvent
from tenants.services import api_key_create, api_key_rotate
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def personas(db):
    return make_personas()


def _url(personas, name, **kwargs):
    return reverse(name, kwargs={"org": personas.org.slug, **kwargs})


def _as(client, personas, persona="admin"):
    return personas.client_for(client, persona)


# --- list -------------------------------------------------------------------------------

def test_the_list_shows_the_orgs_keys_with_their_settings_and_status(client, personas):
    live = api_key_create(org=personas.org, name="support bot", allowed_models=["mock-fast"], rpm_limit=60)
    gone = api_key_create(org=personas.org, name="old job")
    ApiKey.objects.filter(pk=gone.api_key.pk).update(revoked_at=timezone.now())
    api_key_create(org=personas.other_org, name="globex key")
    page = _as(client, personas, "auditor").get(_url(personas, "keys")).content.decode()
    assert "support bot" in page and live.api_key.display in page and "mock-fast" in page and "60 req/min" in page
    assert "old job" in page and 'pill revoked' in page
    assert "globex key" not in page
    assert live.raw not in page


def test_the_list_hides_playground_keys(client, personas):
    api_key_create(org=personas.org, name="playground of owner", kind=ApiKey.Kind.PLAYGROUND)
    page = _as(client, personas).get(_url(personas, "keys")).content.decode()
    assert "playground of owner" not in page


def test_the_list_shows_a_rotated_key_as_expiring(client, personas):
    old = api_key_create(org=personas.org, name="bot")
    api_key_rotate(api_key=old.api_key, overlap=timedelta(hours=1))
    page = _as(client, personas).get(_url(personas, "keys")).content.decode()
    assert "pill expiring" in page and "pill active" in page


def test_the_list_costs_a_bounded_number_of_queries(client, personas, django_assert_max_num_queries):
    for n in range(50):
        issued = api_key_create(org=personas.org, name=f"key {n}", created_by=personas.users["owner"])
        if n % 5 == 0:
            api_key_rotate(api_key=issued.api_key, overlap=timedelta(hours=1))
    _as(client, personas)
    with django_assert_max_num_queries(8):
        response = client.get(_url(personas, "keys"))
    assert response.status_code == 200 and response.content.decode().count("<tr>") == 61  # header + 60


# --- create -------------------------------------------------------------------------------

def _deployments(make_deployment, org):
    from catalog.models import Route

    make_deployment("mock-fast")
    make_deployment("acme-private", org=org)
    Route.objects.create(alias="best_available_general")


def test_the_form_offers_the_names_the_org_can_resolve(client, personas, make_deployment):
    _deployments(make_deployment, personas.org)
    page = _as(client, personas).get(_url(personas, "key_new")).content.decode()
    for name in ("mock-fast", "acme-private", "best_available_general"):
        assert f'value="{name}"' in page
    assert 'id="id_name"' in page and 'id="id_allowed_0"' in page and "Create key" in page


def test_creating_a_key_shows_the_secret_once_and_stores_only_its_digest(client, personas, make_deployment):
    _deployments(make_deployment, personas.org)
    expires = (timezone.now() + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")
    response = _as(client, personas).post(_url(personas, "key_new"), {
        "name": "support bot", "allowed": ["mock-fast", "best_available_general"], "rpm_limit": "30",
        "tpm_limit": "9000", "max_tokens_per_request": "256", "expires_at": expires,
    })
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    page = response.content.decode()
    raw = page.split('<code id="new-key-secret">')[1].split("</code>")[0]
    principal = authenticate_api_key(raw)
    assert principal.allowed_models == ("mock-fast", "best_available_general")
    assert (principal.key_rpm_limit, principal.key_tpm_limit, principal.max_tokens_per_request) == (30, 9000, 256)
    api_key = ApiKey.objects.get(name="support bot")
    assert api_key.created_by == personas.users["admin"]
    assert 'data-copy="#new-key-secret"' in page
    # Not in the session, not on any later page.
    assert raw not in str(dict(client.session.items()))
    assert raw not in client.get(_url(personas, "keys")).content.decode()
    assert raw not in client.get(_url(personas, "key_detail", key=api_key.public_id)).content.decode()
    event = AuditEvent.objects.get(action="api_key.create")
    assert (event.actor_type, event.actor, event.target_id) == ("user", "admin-acme", str(api_key.public_id))


@pytest.mark.parametrize("field,value,error", [
    ("name", "", "This field is required"),
    ("name", "x" * 201, "at most 200 characters"),
    ("allowed", "not-a-model", "Select a valid choice"),
    ("rpm_limit", "0", "greater than or equal to 1"),
    ("tpm_limit", "lots", "Enter a whole number"),
    ("max_tokens_per_request", "-5", "greater than or equal to 1"),
    ("expires_at", "2001-01-01T00:00", "in the future"),
    ("expires_at", "tomorrow", "Enter a valid date/time"),
])
def test_the_create_form_explains_bad_input_and_creates_nothing(client, personas, field, value, error):
    data = {"name": "k", field: value}
    response = _as(client, personas).post(_url(personas, "key_new"), data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not ApiKey.objects.filter(org=personas.org).exists()
    assert not AuditEvent.objects.filter(action="api_key.create").exists()


# --- detail ---------------------------------------------------------------------------------

def test_the_detail_shows_the_rotation_chain_and_the_keys_events(client, personas):
    first = api_key_create(org=personas.org, name="bot")
    second = api_key_rotate(api_key=first.api_key, overlap=timedelta(hours=1))
    third = api_key_rotate(api_key=second.api_key, overlap=timedelta(0))
    page = _as(client, personas, "auditor").get(_url(personas, "key_detail", key=second.api_key.public_id))
    text = page.content.decode().split("<h2>Rotation</h2>")[1]
    positions = [text.index(k.api_key.display) for k in (first, second, third)]
    assert positions == sorted(positions)
    assert "api_key.rotate" in text and "api_key.create" in text
    assert "revoke-form" not in page.content.decode()  # auditors read only


def test_another_orgs_or_a_playground_key_is_not_found(client, personas):
    foreign = api_key_create(org=personas.other_org, name="globex")
    playground = api_key_create(org=personas.org, name="pg", kind=ApiKey.Kind.PLAYGROUND)
    _as(client, personas)
    for issued in (foreign, playground):
        for name in ("key_detail", "key_rotate"):
            assert client.get(_url(personas, name, key=issued.api_key.public_id)).status_code == 404
        assert client.post(_url(personas, "key_revoke", key=issued.api_key.public_id)).status_code == 404
        assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None


# --- revoke ----------------------------------------------------------------------------------

@pytest.fixture
def heard(monkeypatch):
    calls = []
    monkeypatch.setattr(hooks, "_access_revoked_hooks", {"test": lambda *args: calls.append(args)})
    return calls


def test_revoking_from_the_page_disconnects_clients_and_is_audited(client, personas, heard,
                                                                   django_capture_on_commit_callbacks):
    issued = api_key_create(org=personas.org, name="bot")
    page = _as(client, personas).get(_url(personas, "key_detail", key=issued.api_key.public_id)).content.decode()
    assert 'id="revoke-form"' in page and 'data-confirm="Revoke this key? Clients using it are disconnected."' in page
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url(personas, "key_revoke", key=issued.api_key.public_id))
    assert response.status_code == 302
    assert heard == [("api_key", str(issued.api_key.public_id), "API key revoked")]
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is not None
    event = AuditEvent.objects.get(action="api_key.revoke")
    assert (event.actor_type, event.actor) == ("user", "admin-acme")
    assert "revoked" in client.get(response["Location"]).content.decode()


def test_revoking_twice_writes_one_event(client, personas):
    issued = api_key_create(org=personas.org, name="bot")
    _as(client, personas)
    for _ in range(2):
        client.post(_url(personas, "key_revoke", key=issued.api_key.public_id))
    assert AuditEvent.objects.filter(action="api_key.revoke").count() == 1


def test_revoking_needs_a_post(client, personas):
    issued = api_key_create(org=personas.org, name="bot")
    assert _as(client, personas).get(_url(personas, "key_revoke", key=issued.api_key.public_id)).status_code == 405
    assert ApiKey.objects.get(pk=issued.api_key.pk).revoked_at is None


# --- rotate ----------------------------------------------------------------------------------

def test_rotating_from_the_page_shows_the_new_secret_once_and_keeps_the_old_key_for_the_overlap(client, personas):
    old = api_key_create(org=personas.org, name="bot", rpm_limit=7)
    _as(client, personas, "owner")
    assert "24 hours" in client.get(_url(personas, "key_rotate", key=old.api_key.public_id)).content.decode()
    response = client.post(_url(personas, "key_rotate", key=old.api_key.public_id), {"overlap": "24h"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    raw = response.content.decode().split('<code id="new-key-secret">')[1].split("</code>")[0]
    assert authenticate_api_key(raw).key_rpm_limit == 7
    assert authenticate_api_key(old.raw)  # still, during the overlap
    expires = ApiKey.objects.get(pk=old.api_key.pk).expires_at
    assert timedelta(hours=23) < expires - timezone.now() <= timedelta(hours=24)
    event = AuditEvent.objects.get(action="api_key.rotate")
    assert (event.actor, event.data["overlap_seconds"]) == ("owner-acme", 86400)


@pytest.mark.parametrize("data,error", [({}, "This field is required"), ({"overlap": "1y"}, "Select a valid choice")])
def test_the_rotate_form_explains_bad_input(client, personas, data, error):
    old = api_key_create(org=personas.org, name="bot")
    response = _as(client, personas).post(_url(personas, "key_rotate", key=old.api_key.public_id), data)
    assert response.status_code == 400 and error in response.content.decode()
    assert ApiKey.objects.filter(org=personas.org).count() == 1
    assert not AuditEvent.objects.filter(action="api_key.rotate").exists()


def test_rotating_a_revoked_key_is_refused_with_a_clear_error(client, personas):
    old = api_key_create(org=personas.org, name="bot")
    ApiKey.objects.filter(pk=old.api_key.pk).update(revoked_at=timezone.now())
    response = _as(client, personas).post(_url(personas, "key_rotate", key=old.api_key.public_id), {"overlap": "1h"})
    assert response.status_code == 400 and "cannot be rotated" in response.content.decode()
    assert ApiKey.objects.filter(org=personas.org).count() == 1
