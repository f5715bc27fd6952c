"""The audit log pages (tenants/views/audit.py, with tenants/audit_log.py): filters,
keyset pages by seq, the event page, the CSV export and the verification page."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone as dt_timezone

import pytest
from django.urls import reverse

from tenants.audit import record_event
from tenants.models import AuditEvent, AuditVerification
from tenants.services import api_key_create
from tests.support.logs import export_link, next_link, parse_csv, table_rows
from tests.support.personas import make_personas


@pytest.fixture
async def _close_thread_connections():
    """Async tests' ORM calls run on asgiref's shared thread: close its connection after."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_close_thread_connections")]


@pytest.fixture
def personas(db):
    return make_personas()


def _event(org, action="thing.done", **fields):
    fields.setdefault("actor_type", "user")
    return record_event(org=org, action=action, **fields)


def _page(client, personas, query="", persona="auditor"):
    personas.client_for(client, persona)
    return client.get(reverse("audit_log", kwargs={"org": personas.org.slug}) + query)


def _ids(response):
    return [eid for eid, _ in table_rows(response.content.decode(), "audit-log", "data-event-id")]


def test_it_lists_only_the_orgs_events_newest_first(client, personas):
    ours = [_event(personas.org, actor="alice") for _ in range(3)]
    _event(personas.other_org, actor="mallory")
    response = _page(client, personas)
    assert response.status_code == 200
    ids = _ids(response)
    # make_personas' memberships are not audited; every event here is one of ours.
    assert ids[:3] == [str(e.public_id) for e in reversed(ours)]
    assert not AuditEvent.objects.filter(public_id__in=ids).exclude(org=personas.org).exists()


def test_members_and_outsiders_may_not_read_it(client, personas):
    assert _page(client, personas, persona="member").status_code == 403
    client.logout()
    assert _page(client, personas, persona="outsider").status_code == 404


def test_the_actor_filter(client, personas):
    _event(personas.org, actor="alice")
    bob = _event(personas.org, actor="bob")
    assert _ids(_page(client, personas, "?actor=bob")) == [str(bob.public_id)]


def test_the_action_filter_matches_a_prefix(client, personas):
    created = _event(personas.org, action="key.create")
    revoked = _event(personas.org, action="key.revoke")
    _event(personas.org, action="member.add")
    assert _ids(_page(client, personas, "?action=key.")) == [str(revoked.public_id), str(created.public_id)]
    assert _ids(_page(client, personas, "?action=key.create")) == [str(created.public_id)]


def test_the_target_filters(client, personas):
    a = _event(personas.org, target_type="budget", target_id="1")
    b = _event(personas.org, target_type="budget", target_id="2")
    _event(personas.org, target_type="membership", target_id="1")
    assert _ids(_page(client, personas, "?target_type=budget")) == [str(b.public_id), str(a.public_id)]
    assert _ids(_page(client, personas, "?target_type=budget&target_id=1")) == [str(a.public_id)]


def test_the_key_filter_finds_the_events_about_one_key(client, personas):
    issued = api_key_create(org=personas.org, name="app")  # audited: key.create
    api_key_create(org=personas.org, name="other")
    revoked = _event(personas.org, action="key.revoke", target_type="api_key",
                     target_id=str(issued.api_key.public_id))
    ids = _ids(_page(client, personas, f"?key={issued.api_key.public_id}"))
    assert len(ids) == 2 and ids[0] == str(revoked.public_id)
    actions = set(AuditEvent.objects.filter(public_id__in=ids).values_list("action", flat=True))
    assert "key.revoke" in actions and len(actions) == 2


def test_the_date_range_filter(client, personas):
    event = _event(personas.org)
    day = event.created_at.astimezone(dt_timezone.utc).date()
    assert str(event.public_id) in _ids(_page(client, personas, f"?since={day}&until={day}"))
    assert _ids(_page(client, personas, f"?until={day.replace(year=day.year - 1)}")) == []


@pytest.mark.parametrize("query,message", [
    ("?since=tomorrow", "Enter a valid date"),
    ("?since=2031-05-02&until=2031-05-01", "must be on or after the start date"),
    ("?key=nope", "Enter a valid UUID"),
    (f"?key={uuid.uuid4()}&target_type=budget", "choose a key or a target, not both"),
    ("?after=-3", "The page link is not valid"),
    ("?after=abc", "The page link is not valid"),
])
def test_invalid_filters_are_form_errors(client, personas, query, message):
    response = _page(client, personas, query)
    assert response.status_code == 400
    assert message in response.content.decode()


def test_pages_follow_each_other_without_gaps_or_repeats_when_events_arrive(client, personas):
    events = [_event(personas.org, actor="robot", action="tick") for _ in range(120)]
    response = _page(client, personas, "?actor=robot")
    seen = _ids(response)
    link = next_link(response.content.decode())
    while link:
        for _ in range(5):
            _event(personas.org, actor="robot", action="tick")  # newer: before page one
        response = client.get(reverse("audit_log", kwargs={"org": personas.org.slug}) + link)
        seen += _ids(response)
        link = next_link(response.content.decode())
    assert len(seen) == len(set(seen)) == 120
    assert set(seen) == {str(e.public_id) for e in events}


def test_the_list_makes_a_bounded_number_of_queries(client, personas, django_assert_max_num_queries):
    for _ in range(300):
        _event(personas.org)
    personas.client_for(client, "auditor")
    url = reverse("audit_log", kwargs={"org": personas.org.slug})
    with django_assert_max_num_queries(7):
        response = client.get(url + "?action=thing")
    assert len(_ids(response)) == 50


def test_the_event_page_shows_every_field_and_links_its_neighbours(client, personas):
    before = _event(personas.org)
    event = _event(personas.org, actor="alice", action="key.create", target_type="api_key", target_id="k1",
                   data={"name": "app", "nested": {"limit": "10.5"}})
    after = _event(personas.org)
    personas.client_for(client, "auditor")
    response = client.get(reverse("audit_event", kwargs={"org": personas.org.slug, "event": event.public_id}))
    html = response.content.decode()
    assert response.status_code == 200
    for text in (event.hash, event.prev_hash, "key.create", "alice", "k1", str(event.public_id),
                 '&quot;nested&quot;: {\n    &quot;limit&quot;: &quot;10.5&quot;', str(before.public_id),
                 str(after.public_id)):
        assert text in html, text


def test_another_orgs_event_is_not_found(client, personas):
    theirs = _event(personas.other_org)
    personas.client_for(client, "auditor")
    response = client.get(reverse("audit_event", kwargs={"org": personas.org.slug, "event": theirs.public_id}))
    assert response.status_code == 404


# --- CSV export (streamed from another thread: transactional tests) -----------------

async def _download(async_client, url):
    response = await async_client.get(url)
    assert response.status_code == 200
    assert response.is_async and response.streaming
    return b"".join([chunk async for chunk in response.streaming_content])


@pytest.mark.django_db(transaction=True)
async def test_the_csv_equals_the_filtered_pages_and_is_audited(async_client, monkeypatch):
    from asgiref.sync import sync_to_async

    from tenants import audit_log

    monkeypatch.setattr(audit_log, "EXPORT_CHUNK", 9)
    personas = await sync_to_async(make_personas)()

    def events():
        for i in range(70):
            _event(personas.org, actor="alice" if i % 2 else "bob", action="thing.done", data={"i": i})
    await sync_to_async(events)()
    await async_client.aforce_login(personas.users["auditor"])
    url = reverse("audit_log", kwargs={"org": personas.org.slug})
    page_rows, link, csv_link = [], "?actor=alice&action=thing", None
    while link:
        html = (await async_client.get(url + link)).content.decode()
        csv_link = csv_link or export_link(html)
        page_rows += table_rows(html, "audit-log", "data-event-id")
        link = next_link(html)
    exported = parse_csv(await _download(async_client, csv_link))
    assert len(exported) == len(page_rows) == 35
    assert [row["event_id"] for row in exported] == [eid for eid, _ in page_rows]
    for row, (_eid, cells) in zip(exported, page_rows):
        assert {column: row[column] for column in cells} == cells
    assert exported[0]["data"] == '{"i": 69}'
    audited = await AuditEvent.objects.filter(action="export.audit").aget()
    assert audited.data == {"filters": {"actor": "alice", "action": "thing"}}
    assert audited.actor == personas.users["auditor"].username


@pytest.mark.django_db(transaction=True)
async def test_audit_csv_cells_are_defused(async_client):
    from asgiref.sync import sync_to_async

    personas = await sync_to_async(make_personas)()
    await sync_to_async(_event)(personas.org, actor="=cmd|' /C calc'!A0")
    await async_client.aforce_login(personas.users["admin"])
    exported = parse_csv(await _download(async_client, reverse("audit_csv", kwargs={"org": personas.org.slug})
                                         + "?action=thing"))
    assert [row["actor"] for row in exported] == ["'=cmd|' /C calc'!A0"]


# --- Verification page ---------------------------------------------------------------

@pytest.fixture
def eager_verification(monkeypatch):
    """Run queued checks at once, as a worker would (the task's own code, applied eagerly)."""
    from tenants import tasks

    monkeypatch.setattr(tasks.verify_audit_chain, "delay",
                        lambda verification_id: tasks.verify_audit_chain.apply(args=[verification_id]))


@pytest.mark.parametrize("persona", ["owner", "admin", "auditor"])
def test_an_overseer_starts_a_check_and_sees_it_pass(client, personas, persona, eager_verification,
                                                     django_capture_on_commit_callbacks):
    for _ in range(5):
        _event(personas.org)
    personas.client_for(client, persona)
    url = reverse("audit_verify", kwargs={"org": personas.org.slug})
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 302
    verification = AuditVerification.objects.get()
    assert verification.status == "ok" and verification.checked == verification.total == 5  # the chain when it started
    assert verification.started_by == personas.users[persona]
    started = AuditEvent.objects.get(action="audit.verify_started")
    assert started.actor == personas.users[persona].username
    assert started.target_id == str(verification.public_id)
    html = client.get(url).content.decode()
    assert "Intact" in html and "5 / 5" in html and 'http-equiv="refresh"' not in html


def test_a_member_may_not_start_a_check_and_the_refusal_is_audited(client, personas):
    personas.client_for(client, "member")
    response = client.post(reverse("audit_verify", kwargs={"org": personas.org.slug}))
    assert response.status_code == 403
    assert not AuditVerification.objects.exists()
    assert AuditEvent.objects.filter(action="access.denied").exists()


def test_the_page_points_at_the_first_broken_link(client, personas, eager_verification,
                                                  django_capture_on_commit_callbacks):
    events = [_event(personas.org, data={"n": i}) for i in range(8)]
    AuditEvent.objects.filter(pk=events[4].pk).update(data={"n": "forged"})
    personas.client_for(client, "auditor")
    url = reverse("audit_verify", kwargs={"org": personas.org.slug})
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url)
    html = client.get(url).content.decode()
    assert "Broken" in html
    event_url = reverse("audit_event", kwargs={"org": personas.org.slug, "event": events[4].public_id})
    assert f'href="{event_url}"' in html
    assert f"event #{events[4].seq}" in html


def test_a_running_check_refreshes_the_page(client, personas, monkeypatch, django_capture_on_commit_callbacks):
    from tenants import tasks

    monkeypatch.setattr(tasks.verify_audit_chain, "delay", lambda verification_id: None)  # no worker
    personas.client_for(client, "auditor")
    url = reverse("audit_verify", kwargs={"org": personas.org.slug})
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url)
    html = client.get(url).content.decode()
    assert 'http-equiv="refresh"' in html and "Running" in html
    assert "<progress" in html


def test_the_verification_page_makes_a_bounded_number_of_queries(client, personas, django_assert_max_num_queries):
    for i in range(15):
        AuditVerification.objects.create(org=personas.org, status="broken", first_broken_seq=i + 1, total=20,
                                         checked=i, finished_at=datetime(2031, 1, 1, tzinfo=dt_timezone.utc))
        _event(personas.org)
    personas.client_for(client, "auditor")
    with django_assert_max_num_queries(7):
        response = client.get(reverse("audit_verify", kwargs={"org": personas.org.slug}))
    assert response.content.decode().count('class="broken-link"') == 10
