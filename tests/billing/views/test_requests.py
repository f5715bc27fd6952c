"""The request log pages (billing/views/requests.py, with billing/request_log.py):
filters, keyset pages, the detail page and the streamed CSV export."""
from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.models import UsageRecord
from tenants.models import AuditEvent
from tenants.services import api_key_create
from tests.support.logs import (
    BASE_TIME, export_link, make_usage_records, next_link, parse_csv, table_rows,
)
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def personas(db):
    return make_personas()


@pytest.fixture
def key(personas):
    return api_key_create(org=personas.org, name="app").api_key


def _page(client, personas, query="", persona="auditor"):
    personas.client_for(client, persona)
    url = reverse("requests", kwargs={"org": personas.org.slug})
    return client.get(url + query)


def _ids(response):
    return [rid for rid, _cells in table_rows(response.content.decode(), "request-log", "data-request-id")]


def test_it_lists_the_orgs_records_newest_first_with_exact_cost(client, personas, key):
    records = make_usage_records(personas.org, key, 3, cost_usd=Decimal("0.000000123"))
    other_key = api_key_create(org=personas.other_org, name="theirs").api_key
    make_usage_records(personas.other_org, other_key, 2)
    response = _page(client, personas)
    assert response.status_code == 200
    rows = table_rows(response.content.decode(), "request-log", "data-request-id")
    assert [rid for rid, _ in rows] == [str(r.request_id) for r in reversed(records)]
    cells = rows[0][1]
    assert cells["cost_usd"] == "0.000000123"
    assert cells["started"] == "2031-05-01 12:00:02"
    assert cells["key"] == key.display
    assert (cells["tokens_in"], cells["tokens_out"], cells["first_token_ms"], cells["total_ms"]) == ("10", "20", "120", "900")


@pytest.mark.parametrize("persona", ["owner", "admin", "auditor"])
def test_overseers_may_read_it(client, personas, persona):
    assert _page(client, personas, persona=persona).status_code == 200


def test_members_and_outsiders_may_not(client, personas):
    assert _page(client, personas, persona="member").status_code == 403
    client.logout()
    assert _page(client, personas, persona="outsider").status_code == 404


@pytest.mark.parametrize("field,value,matching", [
    ("model", "best_available_general", {"requested_model": "best_available_general"}),
    ("deployment", "claude-3-opus", {"deployment_name": "claude-3-opus"}),
    ("end_user", "user-42", {"end_user": "user-42"}),
    ("status", "upstream_error", {"status": "upstream_error"}),
])
def test_each_filter_keeps_only_matching_records(client, personas, key, field, value, matching):
    make_usage_records(personas.org, key, 4)
    wanted = make_usage_records(personas.org, key, 2, start=BASE_TIME + timedelta(hours=1), **matching)
    response = _page(client, personas, f"?{field}={value}")
    assert response.status_code == 200
    assert sorted(_ids(response)) == sorted(str(r.request_id) for r in wanted)


def test_the_key_filter_takes_a_key_public_id(client, personas, key):
    other = api_key_create(org=personas.org, name="other").api_key
    make_usage_records(personas.org, key, 3)
    wanted = make_usage_records(personas.org, other, 2)
    response = _page(client, personas, f"?key={other.public_id}")
    assert sorted(_ids(response)) == sorted(str(r.request_id) for r in wanted)


def test_the_date_range_is_inclusive_days_in_utc(client, personas, key):
    make_usage_records(personas.org, key, 3, start=BASE_TIME - timedelta(days=2), step=timedelta(days=1))
    # 2031-04-29 12:00, 04-30 12:00, 05-01 12:00
    response = _page(client, personas, "?since=2031-04-30&until=2031-04-30")
    assert len(_ids(response)) == 1
    response = _page(client, personas, "?since=2031-04-30")
    assert len(_ids(response)) == 2
    response = _page(client, personas, "?until=2031-04-30")
    assert len(_ids(response)) == 2


@pytest.mark.parametrize("query,message", [
    ("?since=yesterday", "Enter a valid date"),
    ("?since=2031-05-02&until=2031-05-01", "must be on or after the start date"),
    ("?status=exploded", "Select a valid choice"),
    (f"?key={uuid.uuid4()}", "Select a valid choice"),
    ("?key=not-a-uuid", "Select a valid choice"),
    ("?after=garbage", "The page link is not valid"),
])
def test_invalid_filters_are_form_errors_not_server_errors(client, personas, query, message):
    response = _page(client, personas, query)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert 'id="request-filters"' in response.content.decode()


def test_another_orgs_key_is_not_a_valid_filter(client, personas):
    theirs = api_key_create(org=personas.other_org, name="theirs").api_key
    assert _page(client, personas, f"?key={theirs.public_id}").status_code == 400


def test_pages_follow_each_other_without_gaps_or_repeats_when_new_rows_arrive(client, personas, key):
    # 120 records, several sharing one instant: the cursor must break ties by request id.
    records = make_usage_records(personas.org, key, 60, step=timedelta(0))
    records += make_usage_records(personas.org, key, 60, start=BASE_TIME + timedelta(seconds=5))
    response = _page(client, personas)
    seen = _ids(response)
    link = next_link(response.content.decode())
    while link:
        # Newer rows arrive between page loads: they belong before page one, not in later pages.
        make_usage_records(personas.org, key, 7, start=BASE_TIME + timedelta(days=1))
        response = client.get(reverse("requests", kwargs={"org": personas.org.slug}) + link)
        assert response.status_code == 200
        seen += _ids(response)
        link = next_link(response.content.decode())
    assert len(seen) == len(set(seen))
    assert set(seen) == {str(r.request_id) for r in records}


def test_the_next_link_keeps_the_filters(client, personas, key):
    make_usage_records(personas.org, key, 60, end_user="u1")
    make_usage_records(personas.org, key, 60, end_user="u2")
    response = _page(client, personas, "?end_user=u1")
    link = next_link(response.content.decode())
    assert "end_user=u1" in link
    response = client.get(reverse("requests", kwargs={"org": personas.org.slug}) + link)
    ids = set(_ids(response))
    assert len(ids) == 10
    assert ids <= {str(r.request_id) for r in UsageRecord.objects.filter(end_user="u1")}
    assert next_link(response.content.decode()) is None


def test_the_list_makes_a_bounded_number_of_queries_however_many_rows(client, personas, key,
                                                                       django_assert_max_num_queries):
    for n in range(5):
        api_key_create(org=personas.org, name=f"key {n}")
    make_usage_records(personas.org, key, 500)
    personas.client_for(client, "auditor")
    url = reverse("requests", kwargs={"org": personas.org.slug})
    with django_assert_max_num_queries(8):
        response = client.get(url + "?model=mock-fast")
    assert len(_ids(response)) == 50


def test_the_detail_page_explains_the_route_attempts_prices_and_cost(client, personas, key):
    record = make_usage_records(
        personas.org, key, 1, requested_model="best_available_general", deployment_name="claude-3-opus",
        provider="mock", finish_reason="stop", prompt_tokens=1200, completion_tokens=345,
        prompt_tokens_source="provider", completion_tokens_source="counted",
        input_price_per_mtok=Decimal("2.50"), output_price_per_mtok=Decimal("10.00"), cost_usd=Decimal("0.006450000"),
        route={"deployment": "claude-3-opus", "provider": "mock", "strategy": "fastest", "route": "best_available_general",
               "rule": "big prompts", "reason": "fallback after HTTP 503 from gpt-4-turbo",
               "attempts": [{"deployment": "gpt-4-turbo", "error": "HTTP 503", "code": 502}]},
    )[0]
    personas.client_for(client, "auditor")
    response = client.get(reverse("request_detail", kwargs={"org": personas.org.slug,
                                                            "request_id": record.request_id}))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("best_available_general", "fastest", "big prompts", "fallback after HTTP 503 from gpt-4-turbo",
                 'id="request-attempts"', "gpt-4-turbo", "HTTP 503", "0.00645", "Reported by the provider",
                 "Counted by the gateway", "2.5", "0.003", "0.00345", "stop"):
        assert text in html, text


def test_the_detail_page_of_a_refused_request_has_no_route(client, personas, key):
    record = make_usage_records(personas.org, key, 1, status="rejected", error_code=429, route={})[0]
    personas.client_for(client, "auditor")
    response = client.get(reverse("request_detail", kwargs={"org": personas.org.slug,
                                                            "request_id": record.request_id}))
    assert response.status_code == 200
    assert "No route was recorded" in response.content.decode()


def test_another_orgs_request_is_not_found(client, personas):
    theirs = api_key_create(org=personas.other_org, name="theirs").api_key
    record = make_usage_records(personas.other_org, theirs, 1)[0]
    personas.client_for(client, "auditor")
    response = client.get(reverse("request_detail", kwargs={"org": personas.org.slug,
                                                            "request_id": record.request_id}))
    assert response.status_code == 404


def test_the_export_link_carries_the_current_filters(client, personas, key):
    response = _page(client, personas, "?end_user=u1&status=completed")
    link = export_link(response.content.decode())
    assert link.startswith(reverse("requests_csv", kwargs={"org": personas.org.slug}))
    assert "end_user=u1" in link and "status=completed" in link


# --- The CSV export: an async view streaming from another thread, so its reads need
# committed rows (a transactional test).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_close_thread_connections")]

@pytest.fixture
async def _close_thread_connections():
    """The async tests' ORM calls run on asgiref's shared thread: close its connection
    afterwards, or the test database cannot be dropped at the end of the run."""
    yield
    from asgiref.sync import sync_to_async
    from django.db import connections

    await sync_to_async(connections.close_all)()


async def _download(async_client, url):
    response = await async_client.get(url)
    assert response.status_code == 200, response
    assert response.is_async and response.streaming
    body = b"".join([chunk async for chunk in response.streaming_content])
    return response, body


@pytest.mark.django_db(transaction=True)
async def test_the_csv_holds_exactly_the_filtered_rows_the_pages_show(async_client, monkeypatch):
    from asgiref.sync import sync_to_async

    from billing import request_log

    monkeypatch.setattr(request_log, "EXPORT_CHUNK", 7)  # several chunks
    personas = await sync_to_async(make_personas)()
    key = (await sync_to_async(api_key_create)(org=personas.org, name="app")).api_key

    def rows():
        make_usage_records(personas.org, key, 40, end_user="u1", cost_usd=Decimal("0.000000001"))
        make_usage_records(personas.org, key, 30, end_user="u2")
        make_usage_records(personas.org, key, 25, end_user="u1", status="upstream_error", error_code=502,
                           start=BASE_TIME + timedelta(minutes=5))
    await sync_to_async(rows)()
    await async_client.aforce_login(personas.users["auditor"])
    url = reverse("requests", kwargs={"org": personas.org.slug})
    page_rows, link, csv_link = [], "?end_user=u1", None
    while link:
        response = await async_client.get(url + link)
        html = response.content.decode()
        csv_link = csv_link or export_link(html)
        page_rows += table_rows(html, "request-log", "data-request-id")
        link = next_link(html)
    _response, body = await _download(async_client, csv_link)
    exported = parse_csv(body)
    assert len(exported) == 65
    assert [row["request_id"] for row in exported] == [rid for rid, _ in page_rows]
    for row, (_rid, cells) in zip(exported, page_rows):
        assert row["key_id"] == str(key.public_id)
        assert {column: row[column] for column in cells} == cells
    assert exported[-1]["cost_usd"] == "0.000000001"


@pytest.mark.django_db(transaction=True)
async def test_the_export_is_audited_with_its_filters(async_client):
    from asgiref.sync import sync_to_async

    personas = await sync_to_async(make_personas)()
    await async_client.aforce_login(personas.users["auditor"])
    url = reverse("requests_csv", kwargs={"org": personas.org.slug}) + "?status=completed&end_user=u1"
    await _download(async_client, url)
    event = await AuditEvent.objects.filter(action="export.requests").aget()
    assert event.org_id == personas.org.pk
    assert event.actor == personas.users["auditor"].username
    assert event.data == {"filters": {"status": "completed", "end_user": "u1"}}


@pytest.mark.django_db(transaction=True)
async def test_cells_a_spreadsheet_would_evaluate_are_defused(async_client):
    from asgiref.sync import sync_to_async

    personas = await sync_to_async(make_personas)()
    key = (await sync_to_async(api_key_create)(org=personas.org, name="app")).api_key
    for i, evil in enumerate(("=HYPERLINK(\"http://x\")", "+1+1", "-2", "@SUM(A1)")):
        await sync_to_async(make_usage_records)(personas.org, key, 1, end_user=evil,
                                                start=BASE_TIME + timedelta(seconds=i))
    await async_client.aforce_login(personas.users["auditor"])
    _response, body = await _download(async_client, reverse("requests_csv", kwargs={"org": personas.org.slug}))
    users = [row["end_user"] for row in parse_csv(body)]
    assert users == ["'@SUM(A1)", "'-2", "'+1+1", "'=HYPERLINK(\"http://x\")"]


@pytest.mark.django_db(transaction=True)
async def test_invalid_export_filters_are_a_400(async_client):
    from asgiref.sync import sync_to_async

    personas = await sync_to_async(make_personas)()
    await async_client.aforce_login(personas.users["auditor"])
    response = await async_client.get(reverse("requests_csv", kwargs={"org": personas.org.slug}) + "?since=nope")
    assert response.status_code == 400
    assert b"since" in response.content
    assert not await AuditEvent.objects.filter(action="export.requests").aexists()


@pytest.mark.django_db(transaction=True)
async def test_members_may_not_export(async_client):
    from asgiref.sync import sync_to_async

    personas = await sync_to_async(make_personas)()
    await async_client.aforce_login(personas.users["member"])
    response = await async_client.get(reverse("requests_csv", kwargs={"org": personas.org.slug}))
    assert response.status_code == 403
