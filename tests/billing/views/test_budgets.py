"""The budget pages: list, new, detail and edit."""
from __future__ import annotations

from datetime import datetime, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.budgets import window_bounds
from billing.models import Budget, BudgetCounter
from catalog.models import Route
from tenants.models import ApiKey, AuditEvent
from tenants.services import api_key_create
from tests.support.personas import make_personas

pytestmark = pytest.mark.django_db


@pytest.fixture
def personas(db):
    return make_personas()


def _signed_in(client, personas, persona="owner"):
    return personas.client_for(client, persona)


def _form(**overrides):
    data = {"name": "monthly", "scope": "org", "window": "month", "limit_usd": "10", "limit_tokens": "",
            "soft_threshold_percent": "80", "hard_action": "block", "enabled": "on"}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _new_url(personas):
    return reverse("budget_new", kwargs={"org": personas.org.slug})


# --- Creating: validation ------------------------------------------------------------

def test_it_creates_a_budget_and_audits_it(client, personas):
    response = _signed_in(client, personas).post(_new_url(personas), _form(limit_usd="12.5", limit_tokens="9000"))
    budget = Budget.objects.get(org=personas.org)
    assert response.status_code == 302
    assert response["Location"] == reverse("budget", kwargs={"org": personas.org.slug, "budget": budget.public_id})
    assert budget.limit_usd == Decimal("12.5") and budget.limit_tokens == 9000
    event = AuditEvent.objects.get(org=personas.org, action="budget.create")
    assert event.target_id == str(budget.public_id)
    assert event.actor == personas.users["owner"].username and event.actor_type == "user"
    assert event.data["limit_usd"] == "12.5" and event.data["limit_tokens"] == 9000


@pytest.mark.parametrize("overrides,field,message", [
    ({"limit_usd": ""}, "limit_usd", "set a dollar limit, a token limit, or both"),
    ({"limit_usd": "0"}, "limit_usd", "greater than or equal to"),
    ({"limit_usd": "-1"}, "limit_usd", "greater than or equal to"),
    ({"limit_usd": "0.0000000001"}, "limit_usd", "decimal places"),
    ({"limit_usd": "ten"}, "limit_usd", "Enter a number"),
    ({"limit_tokens": "0"}, "limit_tokens", "greater than or equal to 1"),
    ({"scope": "key"}, "api_key", "a key budget needs its key"),
    ({"soft_threshold_percent": "0"}, "soft_threshold_percent", "greater than or equal to 1"),
    ({"soft_threshold_percent": "101"}, "soft_threshold_percent", "less than or equal to 100"),
    ({"throttle_rpm": "0"}, "throttle_rpm", "greater than or equal to 1"),
    ({"hard_action": "fallback"}, "hard_action", "only a budget filtered to a route or deployment can fall back"),
    ({"window": "week"}, "window", "Select a valid choice"),
    ({"name": ""}, "name", "This field is required"),
])
def test_it_refuses_an_invalid_budget_with_the_fields_error(client, personas, overrides, field, message):
    response = _signed_in(client, personas).post(_new_url(personas), _form(**overrides))
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert field in errors and message in " ".join(errors[field]), errors
    assert not Budget.objects.exists()
    assert not AuditEvent.objects.filter(action="budget.create").exists()


def test_only_a_key_budget_names_a_key(client, personas):
    key = api_key_create(org=personas.org, name="app").api_key
    response = _signed_in(client, personas).post(_new_url(personas), _form(api_key=key.pk))
    assert response.status_code == 400
    assert "only a key budget names a key" in response.context["form"].errors["api_key"]


def test_a_key_budget_takes_an_application_key_of_this_org(client, personas):
    key = api_key_create(org=personas.org, name="app").api_key
    response = _signed_in(client, personas).post(_new_url(personas), _form(scope="key", api_key=key.pk))
    assert response.status_code == 302
    assert Budget.objects.get().api_key == key


@pytest.mark.parametrize("kind_of_key", ["other org", "playground", "revoked"])
def test_a_key_budget_refuses_keys_it_may_not_name(client, personas, kind_of_key):
    from tenants.services import api_key_revoke

    if kind_of_key == "other org":
        key = api_key_create(org=personas.other_org, name="theirs").api_key
    else:
        key = api_key_create(org=personas.org, name="mine").api_key
        if kind_of_key == "playground":
            ApiKey.objects.filter(pk=key.pk).update(kind=ApiKey.Kind.PLAYGROUND)
        else:
            api_key_revoke(api_key=key)
    response = _signed_in(client, personas).post(_new_url(personas), _form(scope="key", api_key=key.pk))
    assert response.status_code == 400
    assert "Select a valid choice" in response.context["form"].errors["api_key"][0]
    assert not Budget.objects.exists()


def test_routes_and_deployments_of_another_org_are_refused(client, personas):
    theirs = Route.objects.create(org=personas.other_org, alias="theirs")
    mine = Route.objects.create(org=personas.org, alias="mine")
    c = _signed_in(client, personas)
    for field in ("route", "fallback_route"):
        data = _form(route=mine.pk, hard_action="fallback", fallback_route=mine.pk)
        data[field] = theirs.pk
        response = c.post(_new_url(personas), data)
        assert response.status_code == 400
        assert "Select a valid choice" in response.context["form"].errors[field][0]
    options = response.context["form"].fields["route"].queryset
    assert list(options) == [mine]


def test_a_platform_route_may_be_named(client, personas):
    platform = Route.objects.create(org=None, alias="platform-route")
    response = _signed_in(client, personas).post(_new_url(personas), _form(route=platform.pk))
    assert response.status_code == 302
    assert Budget.objects.get().route == platform


def test_fallback_rules(client, personas):
    a = Route.objects.create(org=personas.org, alias="a")
    b = Route.objects.create(org=personas.org, alias="b")
    c = _signed_in(client, personas)
    errors = lambda data: c.post(_new_url(personas), _form(**data)).context["form"].errors  # noqa: E731
    assert "choose the route to fall back to" in errors({"route": a.pk, "hard_action": "fallback"})["fallback_route"]
    assert "a budget cannot fall back to the route it limits" in errors(
        {"route": a.pk, "hard_action": "fallback", "fallback_route": a.pk})["fallback_route"]
    assert "a fallback route is used only with the fallback action" in errors(
        {"route": a.pk, "fallback_route": b.pk})["fallback_route"]
    # a -> b exists; b -> a would close a cycle
    assert c.post(_new_url(personas), _form(name="a to b", route=a.pk, hard_action="fallback",
                                            fallback_route=b.pk)).status_code == 302
    cycle = errors({"name": "b to a", "route": b.pk, "hard_action": "fallback", "fallback_route": a.pk})
    assert cycle["fallback_route"] == ["fallback cycle: b -> a -> b"]


def test_a_route_and_a_deployment_together_are_refused(client, personas, make_deployment):
    route = Route.objects.create(org=personas.org, alias="r")
    deployment = make_deployment("mine", org=personas.org)
    response = _signed_in(client, personas).post(_new_url(personas), _form(route=route.pk, deployment=deployment.pk))
    assert response.status_code == 400
    assert response.context["form"].errors["deployment"] == ["filter on a route or a deployment, not both"]


def test_another_orgs_deployment_is_refused(client, personas, make_deployment):
    theirs = make_deployment("theirs", org=personas.other_org)
    response = _signed_in(client, personas).post(_new_url(personas), _form(deployment=theirs.pk))
    assert response.status_code == 400
    assert "Select a valid choice" in response.context["form"].errors["deployment"][0]


# --- Editing ---------------------------------------------------------------------------

def _budget(org, **fields):
    fields.setdefault("name", "monthly")
    fields.setdefault("limit_usd", Decimal("10"))
    return Budget.objects.create(org=org, **fields)


def _detail_url(budget):
    return reverse("budget", kwargs={"org": budget.org.slug, "budget": budget.public_id})


def test_an_edit_is_saved_and_audited_with_the_changed_fields(client, personas):
    budget = _budget(personas.org)
    response = _signed_in(client, personas, "admin").post(
        _detail_url(budget), _form(limit_usd="25.000000001", window="day"))
    assert response.status_code == 302
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("25.000000001") and budget.window == "day"
    event = AuditEvent.objects.get(action="budget.update")
    assert event.data["changed"] == {"limit_usd": ["10", "25.000000001"], "window": ["month", "day"]}
    assert event.actor == personas.users["admin"].username and event.target_id == str(budget.public_id)


def test_an_edit_that_changes_nothing_writes_no_event(client, personas):
    budget = _budget(personas.org)
    assert _signed_in(client, personas).post(_detail_url(budget), _form()).status_code == 302
    assert not AuditEvent.objects.filter(action="budget.update").exists()


def test_an_invalid_edit_changes_nothing(client, personas):
    budget = _budget(personas.org)
    response = _signed_in(client, personas).post(_detail_url(budget), _form(limit_usd="", limit_tokens=""))
    assert response.status_code == 400
    assert "set a dollar limit" in response.content.decode()
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("10")
    assert not AuditEvent.objects.filter(action="budget.update").exists()


def test_an_edit_reaches_the_gateways_cache(client, personas):
    """Budget writes bump the config version the gateway's caches follow (gateway/freshness.py)."""
    from gateway.models import ConfigVersion

    budget = _budget(personas.org)
    before = ConfigVersion.objects.get().version
    _signed_in(client, personas).post(_detail_url(budget), _form(limit_usd="11"))
    assert ConfigVersion.objects.get().version > before


def test_another_orgs_budget_is_not_found(client, personas):
    theirs = _budget(personas.other_org)
    url = reverse("budget", kwargs={"org": personas.org.slug, "budget": theirs.public_id})
    c = _signed_in(client, personas)
    assert c.get(url).status_code == 404
    assert c.post(url, _form(limit_usd="99")).status_code == 404
    theirs.refresh_from_db()
    assert theirs.limit_usd == Decimal("10")


def test_an_auditor_sees_the_budget_without_a_form(client, personas):
    budget = _budget(personas.org)
    response = _signed_in(client, personas, "auditor").get(_detail_url(budget))
    assert response.status_code == 200
    assert b'class="card budget-form"' not in response.content
    assert _signed_in(client, personas, "auditor").post(_detail_url(budget), _form(limit_usd="1")).status_code == 403


# --- Figures ---------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_redis_counters():
    yield from _clear_redis_counters()


def _clear_redis_counters():
    from django.conf import settings

    if not settings.REDIS_URL:
        yield
        return
    import redis

    from billing.ledger import redis_prefix

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match=f"{redis_prefix()}:c:*"):
        client.delete(key)
    yield
    for key in client.scan_iter(match=f"{redis_prefix()}:c:*"):
        client.delete(key)
    client.close()


def _counter(budget, *, subject="", at=None, **values):
    """A counter in the ledger this process uses (database rows, or Redis)."""
    from django.conf import settings

    at = at or datetime.now(dt_timezone.utc)
    start, end = window_bounds(budget.window, at)
    if not settings.REDIS_URL:
        return BudgetCounter.objects.create(budget=budget, subject=subject, window_start=start, **values)
    import redis

    from billing.budgets import BudgetRule, CounterRef
    from billing.ledger import redis_prefix
    from billing.models import UsageRecord

    ref = CounterRef(rule=BudgetRule.from_model(budget), subject=subject, window_start=start, window_end=end)
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.hset(ref.redis_key(redis_prefix()), mapping={
        "sn": values.get("spent_nanos", 0), "st": values.get("spent_tokens", 0),
        "rn": values.get("reserved_nanos", 0), "rt": values.get("reserved_tokens", 0)})
    client.close()
    if subject:  # Redis names end users' counters by digest: the page names them from usage
        key = ApiKey.objects.filter(org=budget.org).first() or api_key_create(org=budget.org, name="u").api_key
        UsageRecord.objects.create(org=budget.org, api_key=key, requested_model="m", status="rejected",
                                   end_user=subject, started_at=at)


def test_the_list_shows_exact_spent_reserved_and_remaining(client, personas):
    budget = _budget(personas.org, limit_usd=Decimal("0.004"), limit_tokens=1000)
    _counter(budget, spent_nanos=1_800_001, spent_tokens=250, reserved_nanos=1_000_000, reserved_tokens=100)
    response = _signed_in(client, personas, "auditor").get(reverse("budgets", kwargs={"org": personas.org.slug}))
    assert response.status_code == 200
    [status] = response.context["statuses"]
    f = status.figures
    assert f.spent_usd == Decimal("0.001800001") and f.reserved_usd == Decimal("0.001")
    assert f.remaining_usd == Decimal("0.001199999") and f.remaining_tokens == 650
    assert f.percent_used == Decimal("45.000025")
    html = response.content.decode()
    assert "$0.001800001" in html and "$0.001199999" in html and "<meter" in html
    assert 'value="45.000025"' in html


def test_the_list_is_bounded_in_queries(client, personas, django_assert_max_num_queries):
    keys = [api_key_create(org=personas.org, name=f"k{i}").api_key for i in range(5)]
    route = Route.objects.create(org=personas.org, alias="r")
    for i in range(30):
        b = _budget(personas.org, name=f"b{i}", scope=["org", "key", "end_user"][i % 3],
                    api_key=keys[i % 5] if i % 3 == 1 else None, route=route if i % 2 else None)
        _counter(b, subject="u1" if b.scope == "end_user" else "", spent_nanos=i)
    c = _signed_in(client, personas)
    with django_assert_max_num_queries(12):
        response = c.get(reverse("budgets", kwargs={"org": personas.org.slug}))
    assert response.status_code == 200 and len(response.context["statuses"]) == 30


def test_a_budget_without_a_counter_shows_the_windows_usage(client, personas):
    """A budget created mid-window counts the window's spend before it (docs/budgets.md)."""
    from billing.models import UsageRecord

    UsageRecord.objects.create(org=personas.org, api_key=api_key_create(org=personas.org, name="k").api_key,
                               requested_model="m", status="completed", cost_usd=Decimal("0.25"), prompt_tokens=3,
                               completion_tokens=4)
    budget = _budget(personas.org)
    response = _signed_in(client, personas).get(_detail_url(budget))
    figures = response.context["status"].figures
    assert figures.spent_usd == Decimal("0.25") and figures.spent_tokens == 7 and figures.reserved_usd == 0


def test_a_per_end_user_budget_shows_the_total_and_the_top_end_users(client, personas):
    budget = _budget(personas.org, scope="end_user", limit_usd=Decimal("1"))
    for i in range(8):
        _counter(budget, subject=f"user-{i}", spent_nanos=(i + 1) * 100_000_000, reserved_nanos=i)
    response = _signed_in(client, personas).get(_detail_url(budget))
    status = response.context["status"]
    assert status.subject_count == 8
    assert [s.subject for s in status.subjects] == ["user-7", "user-6", "user-5", "user-4", "user-3"]
    assert status.figures.spent_usd == Decimal("3.6") and status.figures.reserved_usd == Decimal("0.000000028")
    assert status.meter_figures.percent_used == Decimal(80) and status.state == "near"
    assert "user-7" in response.content.decode() and "user-2" not in response.content.decode()


def test_counters_of_other_windows_do_not_count(client, personas):
    budget = _budget(personas.org, window="day")
    _counter(budget, at=datetime(2020, 1, 1, tzinfo=dt_timezone.utc), spent_nanos=5_000_000_000)
    _counter(budget, spent_nanos=1)
    response = _signed_in(client, personas).get(_detail_url(budget))
    assert response.context["status"].figures.spent_usd == Decimal("0.000000001")
