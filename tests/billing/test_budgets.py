"""Budget rules without the request path (billing/budgets.py): windows, which budgets
apply, what a request reserves, how a refusal reads, the remaining room; and the Budget
model's validation (billing/models.py, `Budget.clean`)."""
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from billing.budgets import (
    EPOCH, BudgetBusy, BudgetExhausted, BudgetRule, CounterRef, CounterState, Lease, applicable, first_refusal,
    load_budgets, plan_lease, remaining, reserved_prompt_tokens, verdict, window_bounds,
)
from billing.models import Budget
from catalog.money import Prices
from catalog.models import Deployment, Route, RouteCandidate

UTC = timezone.utc


def rule(id=1, *, name="monthly", scope="org", api_key_id=None, window="month", limit_nanos=None,
         limit_tokens=None, route_id=None, deployment_id=None, fallback_route=None) -> BudgetRule:
    return BudgetRule(id=id, org_id=1, name=name, scope=scope, api_key_id=api_key_id, window=window,
                      limit_nanos=limit_nanos, limit_tokens=limit_tokens, route_id=route_id,
                      deployment_id=deployment_id, soft_threshold_percent=80, throttle_rpm=None,
                      fallback_route=fallback_route)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- window_bounds ------------------------------------------------------------------

def test_an_hour_window_is_the_utc_hour_of_a_non_utc_time():
    plus_0530 = timezone(timedelta(hours=5, minutes=30))
    # 03:10 at +05:30 is 21:40 UTC the day before.
    start, end = window_bounds("hour", datetime(2028, 3, 1, 3, 10, 59, 999_999, tzinfo=plus_0530))
    assert (start, end) == (utc(2028, 2, 29, 21), utc(2028, 2, 29, 22))
    assert start.tzinfo is UTC and end.tzinfo is UTC


def test_a_day_window_is_the_utc_day_of_a_non_utc_time():
    minus_0800 = timezone(timedelta(hours=-8))
    # 20:00 on Feb 29 at -08:00 is 04:00 UTC on Mar 1.
    start, end = window_bounds("day", datetime(2028, 2, 29, 20, 0, tzinfo=minus_0800))
    assert (start, end) == (utc(2028, 3, 1), utc(2028, 3, 2))
    assert start.tzinfo is UTC and end.tzinfo is UTC


def test_a_month_window_in_february_of_a_leap_year_has_29_days():
    start, end = window_bounds("month", utc(2028, 2, 15, 12, 30))
    assert (start, end) == (utc(2028, 2, 1), utc(2028, 3, 1))
    assert end - start == timedelta(days=29)
    start, end = window_bounds("month", utc(2027, 2, 28, 23, 59, 59))
    assert (start, end) == (utc(2027, 2, 1), utc(2027, 3, 1)) and end - start == timedelta(days=28)


def test_a_december_window_ends_on_the_first_of_january_of_the_next_year():
    assert window_bounds("month", utc(2027, 12, 31, 23, 59, 59, 999_999)) == (utc(2027, 12, 1), utc(2028, 1, 1))
    # 00:30 on Jan 1 at +01:00 is still December in UTC.
    start, end = window_bounds("month", datetime(2028, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))))
    assert (start, end) == (utc(2027, 12, 1), utc(2028, 1, 1))
    assert start.tzinfo is UTC


def test_a_window_includes_its_start_and_excludes_its_end():
    start, end = window_bounds("hour", utc(2028, 5, 4, 10))
    assert start == utc(2028, 5, 4, 10)
    assert window_bounds("hour", end)[0] == end
    assert window_bounds("day", utc(2028, 5, 5))[0] == utc(2028, 5, 5)
    assert window_bounds("month", utc(2028, 6, 1))[0] == utc(2028, 6, 1)


def test_a_lifetime_window_starts_at_the_epoch_and_never_ends():
    assert EPOCH == utc(1970, 1, 1)
    assert window_bounds("lifetime", datetime(2031, 7, 4, 9, tzinfo=timezone(timedelta(hours=-4)))) == (EPOCH, None)


# --- applicable ---------------------------------------------------------------------

def names(rules):
    return [r.name for r in rules]


def test_org_budgets_apply_to_every_request_of_the_org():
    rules = (rule(1, name="org"),)
    assert names(applicable(rules, key_id=7, end_user="", route_id=None, deployment_id=3)) == ["org"]
    assert names(applicable(rules, key_id=8, end_user="u1", route_id=4, deployment_id=3)) == ["org"]


def test_a_key_budget_applies_only_to_its_key():
    rules = (rule(1, name="key 7", scope="key", api_key_id=7), rule(2, name="key 8", scope="key", api_key_id=8))
    assert names(applicable(rules, key_id=7, end_user="", route_id=None, deployment_id=3)) == ["key 7"]
    assert names(applicable(rules, key_id=9, end_user="", route_id=None, deployment_id=3)) == []


def test_an_end_user_budget_applies_only_when_an_end_user_is_given():
    rules = (rule(1, name="per user", scope="end_user"),)
    assert names(applicable(rules, key_id=7, end_user="", route_id=None, deployment_id=3)) == []
    assert names(applicable(rules, key_id=7, end_user="alice", route_id=None, deployment_id=3)) == ["per user"]


def test_filtered_budgets_apply_only_to_their_route_or_deployment():
    rules = (rule(1, name="all"), rule(2, name="route 10", route_id=10), rule(3, name="dep 20", deployment_id=20),
             rule(4, name="key route 10", scope="key", api_key_id=7, route_id=10))
    assert names(applicable(rules, key_id=7, end_user="", route_id=10, deployment_id=20)) == [
        "all", "route 10", "dep 20", "key route 10"]
    assert names(applicable(rules, key_id=7, end_user="", route_id=11, deployment_id=20)) == ["all", "dep 20"]
    assert names(applicable(rules, key_id=7, end_user="", route_id=10, deployment_id=21)) == [
        "all", "route 10", "key route 10"]
    assert names(applicable(rules, key_id=8, end_user="", route_id=10, deployment_id=21)) == ["all", "route 10"]
    # Called directly (no route), only deployment filters can match.
    assert names(applicable(rules, key_id=7, end_user="", route_id=None, deployment_id=20)) == ["all", "dep 20"]
    assert names(applicable(rules, key_id=7, end_user="", route_id=None, deployment_id=None)) == ["all"]


def test_filtered_false_leaves_filtered_budgets_out():
    rules = (rule(1, name="all"), rule(2, name="route 10", route_id=10), rule(3, name="dep 20", deployment_id=20),
             rule(4, name="per user", scope="end_user"))
    assert names(applicable(rules, key_id=7, end_user="bob", route_id=10, deployment_id=20, filtered=False)) == [
        "all", "per user"]


def test_rules_are_loaded_from_enabled_budgets_with_the_limit_rounded_up_to_the_nano(db, org, issued_key):
    route, fallback = Route.objects.create(alias="premium", org=org), Route.objects.create(alias="cheap", org=org)
    Budget.objects.create(org=org, name="tiny", limit_usd=Decimal("0.0000000015"))
    Budget.objects.create(org=org, name="off", limit_tokens=5, enabled=False)
    Budget.objects.create(org=org, name="premium cap", scope="key", api_key=issued_key.api_key, window="day",
                          limit_tokens=1000, route=route, hard_action="fallback", fallback_route=fallback)
    tiny, capped = load_budgets(org.pk)
    assert (tiny.name, tiny.limit_nanos, tiny.limit_tokens, tiny.fallback_route) == ("tiny", 2, None, None)
    assert not tiny.filtered and capped.filtered
    assert (capped.limit_nanos, capped.limit_tokens, capped.fallback_route) == (None, 1000, "cheap")
    assert (capped.scope, capped.api_key_id, capped.route_id) == ("key", issued_key.api_key.pk, route.pk)
    assert capped.describe() == "'premium cap' (API key, day)"


# --- plan_lease -------------------------------------------------------------------------

MOCK_PRICES = Prices(Decimal("2.50"), Decimal("10.00"))


def test_the_reserved_prompt_is_the_count_plus_ten_percent_plus_sixteen_tokens():
    assert reserved_prompt_tokens(0) == 16
    assert reserved_prompt_tokens(100) == 126     # 110 + 16
    assert reserved_prompt_tokens(7) == 24        # 7.7 -> 8, + 16
    assert reserved_prompt_tokens(19) == 37       # 20.9 -> 21, + 16
    assert reserved_prompt_tokens(1000) == 1116
    assert reserved_prompt_tokens(123_456) == 135_818  # 135801.6 -> 135802, + 16
    for counted in range(0, 500):
        reserved = reserved_prompt_tokens(counted)
        assert isinstance(reserved, int)
        exact = Decimal(counted) * Decimal("1.1") + 16
        assert exact <= reserved < exact + 1  # rounded up: the margin never shrinks


def test_a_lease_reserves_the_prompt_with_its_margin_and_every_completion_token():
    request_id = uuid.uuid4()
    usage = {"deployment": "mock-fast"}
    lease = plan_lease(request_id=request_id, org_id=5, refs=[], prices=MOCK_PRICES, prompt_tokens=100,
                       max_tokens=50, usage=usage)
    # prompt 126 * 2.5 / 1e6 + 50 * 10 / 1e6 = 0.000315 + 0.0005 = 0.000815 USD
    assert lease.nanos == 815_000
    assert lease.tokens == 176
    assert (lease.request_id, lease.org_id, lease.usage, lease.completion_tokens) == (request_id, 5, usage, 0)
    assert lease.payload() == {"usage": usage, "nanos": 815_000, "tokens": 176}


def test_a_lease_with_an_empty_prompt_still_reserves_the_margin():
    lease = plan_lease(request_id=uuid.uuid4(), org_id=5, refs=[], prices=MOCK_PRICES, prompt_tokens=0,
                       max_tokens=0, usage={})
    assert (lease.nanos, lease.tokens) == (40_000, 16)  # 16 * 2.5 / 1e6 = 0.00004 USD


def test_a_lease_rounds_a_sub_nano_cost_up():
    prices = Prices(Decimal("0.000001"), Decimal("0.000001"))
    lease = plan_lease(request_id=uuid.uuid4(), org_id=5, refs=[], prices=prices, prompt_tokens=0,
                       max_tokens=4, usage={})
    # (16 + 4) * 0.000001 / 1e6 = 0.00000000002 USD = 0.02 nanos -> 1
    assert (lease.nanos, lease.tokens) == (1, 20)


def test_a_lease_of_a_large_request():
    lease = plan_lease(request_id=uuid.uuid4(), org_id=5, refs=[], prices=Prices(Decimal("3"), Decimal("15")),
                       prompt_tokens=150_000, max_tokens=8192, usage={})
    # prompt 165016 * 3 / 1e6 = 0.495048; 8192 * 15 / 1e6 = 0.12288; total 0.617928 USD
    assert (lease.nanos, lease.tokens) == (617_928_000, 173_208)


# --- BudgetExhausted and remaining -------------------------------------------------------

def ref(r: BudgetRule, end: datetime | None = utc(2028, 3, 1)) -> CounterRef:
    start = window_bounds(r.window, utc(2028, 2, 10))[0] if end is not None else EPOCH
    return CounterRef(rule=r, subject="", window_start=start, window_end=end)


def lease(nanos=815_000, tokens=176) -> Lease:
    return Lease(request_id=uuid.uuid4(), org_id=1, refs=[], nanos=nanos, tokens=tokens, usage={})


def test_a_dollar_refusal_says_what_was_used_what_the_request_could_cost_and_when_it_resets():
    budget = rule(limit_nanos=1_000_000_000)
    exc = BudgetExhausted(ref(budget), CounterState(spent_nanos=999_500_000, reserved_nanos=500_000), lease())
    assert exc.message() == (
        "budget 'monthly' (organization, month) is used up: $0.9995 of $1 spent, "
        "and this request could cost up to $0.000815; it resets at 2028-03-01T00:00:00Z")
    assert str(exc) == exc.message()
    assert exc.fallback_route is None


def test_a_token_refusal_counts_tokens():
    budget = rule(name="daily tokens", scope="key", api_key_id=3, window="day", limit_nanos=1_000_000_000,
                  limit_tokens=1000)
    exc = BudgetExhausted(ref(budget, utc(2028, 2, 11)), CounterState(spent_nanos=10, spent_tokens=900,
                                                                    reserved_tokens=100), lease())
    # The dollar limit has room: only the token limit is mentioned.
    assert exc.message() == (
        "budget 'daily tokens' (API key, day) is used up: 900 of 1000 tokens spent, "
        "and this request could use up to 176; it resets at 2028-02-11T00:00:00Z")


def test_a_refusal_on_both_limits_names_both():
    budget = rule(name="both", scope="end_user", window="hour", limit_nanos=1_000_000, limit_tokens=200)
    exc = BudgetExhausted(ref(budget, utc(2028, 2, 10, 13)),
                          CounterState(spent_nanos=250_000, spent_tokens=50), lease())
    assert exc.message() == (
        "budget 'both' (end user, hour) is used up: $0.00025 of $0.001 spent, and this request "
        "could cost up to $0.000815; 50 of 200 tokens spent, and this request could use up to 176; "
        "it resets at 2028-02-10T13:00:00Z")


def test_a_lifetime_refusal_does_not_reset_and_carries_the_fallback():
    budget = rule(name="trial", window="lifetime", limit_tokens=100, route_id=4, fallback_route="cheap")
    exc = BudgetExhausted(ref(budget, None), CounterState(spent_tokens=100), lease(tokens=17))
    assert exc.message() == ("budget 'trial' (organization, lifetime) is used up: 100 of 100 tokens spent, "
                             "and this request could use up to 17; it does not reset")
    assert exc.fallback_route == "cheap"


def test_a_refusal_with_room_left_says_so():
    exc = BudgetExhausted(ref(rule(limit_tokens=1000)), CounterState(), lease(tokens=10))
    assert exc.message() == ("budget 'monthly' (organization, month) is used up: no room left; "
                             "it resets at 2028-03-01T00:00:00Z")


def test_only_settled_spend_uses_a_budget_up_reservations_make_it_busy():
    budget = rule(limit_nanos=1_000_000, limit_tokens=1000)
    worst = lease(nanos=300_000, tokens=100)
    assert verdict(budget, CounterState(spent_nanos=700_000), worst) is None  # exactly fits
    assert verdict(budget, CounterState(spent_nanos=700_001), worst) == "exhausted"
    assert verdict(budget, CounterState(spent_nanos=100_000, reserved_nanos=600_001), worst) == "busy"
    assert verdict(budget, CounterState(spent_tokens=901, reserved_tokens=10), worst) == "exhausted"
    assert verdict(budget, CounterState(spent_tokens=500, reserved_tokens=401), worst) == "busy"
    assert verdict(rule(limit_tokens=10), CounterState(), worst) == "exhausted"  # never fits, however long one waits


def test_a_used_up_budget_is_reported_before_a_busy_one_and_fallbacks_first():
    busy_rule = rule(1, name="busy", limit_nanos=1_000_000)
    used_rule = rule(2, name="used", limit_nanos=1_000_000)
    fallback_rule = rule(3, name="premium", limit_nanos=1_000_000, route_id=4, fallback_route="cheap")
    worst = lease(nanos=300_000, tokens=100)
    worst.refs = [ref(busy_rule), ref(used_rule), ref(fallback_rule)]
    busy, used = CounterState(reserved_nanos=900_000), CounterState(spent_nanos=900_000)
    refusal = first_refusal(worst, [busy, used, used])
    assert isinstance(refusal, BudgetExhausted) and refusal.ref.rule.name == "premium"
    refusal = first_refusal(worst, [busy, used, CounterState()])
    assert isinstance(refusal, BudgetExhausted) and refusal.ref.rule.name == "used"
    refusal = first_refusal(worst, [busy, CounterState(), busy])
    assert isinstance(refusal, BudgetBusy) and refusal.ref.rule.name == "premium"
    assert first_refusal(worst, [CounterState(), CounterState(), CounterState()]) is None


def test_no_budgets_leave_no_remaining():
    assert remaining([], []) is None


def test_remaining_reports_the_budget_with_the_smallest_share_left():
    dollars = rule(1, name="dollars", limit_nanos=1_000_000_000)             # 65% left
    tokens = rule(2, name="tokens", window="day", limit_tokens=1000)         # 10% left
    lifetime = rule(3, name="lifetime", window="lifetime", limit_nanos=10_000_000_000)  # 90% left
    refs = [ref(dollars), ref(tokens, utc(2028, 2, 11)), ref(lifetime, None)]
    states = [CounterState(spent_nanos=250_000_000, reserved_nanos=100_000_000),
              CounterState(spent_tokens=850, reserved_tokens=50), CounterState(spent_nanos=1_000_000_000)]
    assert remaining(refs, states) == {"budget": "tokens", "remaining_usd": None, "remaining_tokens": 100,
                                       "window_end": "2028-02-11T00:00:00Z"}
    assert remaining(refs[:1], states[:1]) == {"budget": "dollars", "remaining_usd": "0.65",
                                               "remaining_tokens": None, "window_end": "2028-03-01T00:00:00Z"}
    assert remaining(refs[2:], states[2:]) == {"budget": "lifetime", "remaining_usd": "9",
                                               "remaining_tokens": None, "window_end": None}


def test_a_budget_with_both_limits_counts_by_its_tighter_one():
    both = rule(1, name="both", limit_nanos=1_000_000_000, limit_tokens=1000)  # 80% of dollars, 5% of tokens
    dollars = rule(2, name="dollars", limit_nanos=1_000_000_000)                # 50% left
    states = [CounterState(spent_nanos=200_000_000, spent_tokens=950), CounterState(spent_nanos=500_000_000)]
    assert remaining([ref(both), ref(dollars)], states) == {
        "budget": "both", "remaining_usd": "0.8", "remaining_tokens": 50, "window_end": "2028-03-01T00:00:00Z"}


def test_remaining_is_never_negative():
    both = rule(name="over", limit_nanos=1_000_000, limit_tokens=10)
    state = CounterState(spent_nanos=900_000, reserved_nanos=815_000, spent_tokens=8, reserved_tokens=176)
    assert remaining([ref(both)], [state]) == {"budget": "over", "remaining_usd": "0", "remaining_tokens": 0,
                                               "window_end": "2028-03-01T00:00:00Z"}


# --- Budget.clean -----------------------------------------------------------------------

def route_with_candidate(alias, org, deployment):
    route = Route.objects.create(alias=alias, org=org)
    RouteCandidate.objects.create(route=route, deployment=deployment)
    return route


@pytest.fixture
def dep(db):
    return Deployment.objects.create(name="clean-model", provider="mock", litellm_model="openai/clean-model",
                                     input_price_per_mtok=Decimal("1"), output_price_per_mtok=Decimal("2"))


def errors_of(budget) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        budget.full_clean()
    return caught.value.message_dict


def test_a_budget_needs_a_limit(db, org):
    assert "set a dollar limit, a token limit, or both" in errors_of(Budget(org=org, name="b"))["limit_usd"]
    Budget(org=org, name="b", limit_usd=Decimal("0.000000001")).full_clean()
    Budget(org=org, name="b", limit_tokens=1).full_clean()
    Budget(org=org, name="b", limit_usd=Decimal("5"), limit_tokens=1000).full_clean()


def test_a_key_budget_needs_a_key_of_its_own_org(db, org, other_org, issued_key):
    from tenants.services import api_key_create

    assert errors_of(Budget(org=org, name="b", scope="key", limit_tokens=5))["api_key"] == [
        "a key budget needs its key"]
    theirs = api_key_create(org=other_org, name="theirs").api_key
    assert errors_of(Budget(org=org, name="b", scope="key", api_key=theirs, limit_tokens=5))["api_key"] == [
        "the key belongs to another organization"]
    Budget(org=org, name="b", scope="key", api_key=issued_key.api_key, limit_tokens=5).full_clean()


@pytest.mark.parametrize("scope", ["org", "end_user"])
def test_only_a_key_budget_names_a_key(db, org, issued_key, scope):
    budget = Budget(org=org, name="b", scope=scope, api_key=issued_key.api_key, limit_tokens=5)
    assert errors_of(budget)["api_key"] == ["only a key budget names a key"]


def test_a_budget_filters_on_a_route_or_a_deployment_not_both(db, org, dep):
    route = route_with_candidate("r", org, dep)
    errors = errors_of(Budget(org=org, name="b", limit_tokens=5, route=route, deployment=dep))
    assert "filter on a route or a deployment, not both" in errors["deployment"]


def test_only_a_filtered_budget_with_a_fallback_route_falls_back(db, org, dep):
    premium, cheap = route_with_candidate("premium", org, dep), route_with_candidate("cheap", org, dep)
    unfiltered = Budget(org=org, name="b", limit_tokens=5, hard_action="fallback", fallback_route=cheap)
    assert errors_of(unfiltered)["hard_action"] == [
        "only a budget filtered to a route or deployment can fall back; an unfiltered budget at its limit must block"]
    no_target = Budget(org=org, name="b", limit_tokens=5, route=premium, hard_action="fallback")
    assert errors_of(no_target)["fallback_route"] == ["choose the route to fall back to"]
    blocking = Budget(org=org, name="b", limit_tokens=5, route=premium, fallback_route=cheap)
    assert errors_of(blocking)["fallback_route"] == ["a fallback route is used only with the fallback action"]
    Budget(org=org, name="b", limit_tokens=5, route=premium, hard_action="fallback", fallback_route=cheap).full_clean()
    Budget(org=org, name="b", limit_tokens=5, deployment=dep, hard_action="fallback", fallback_route=cheap).full_clean()


def test_a_budget_cannot_fall_back_to_the_route_it_limits(db, org, dep):
    premium = route_with_candidate("premium", org, dep)
    budget = Budget(org=org, name="b", limit_tokens=5, route=premium, hard_action="fallback", fallback_route=premium)
    assert errors_of(budget)["fallback_route"] == ["a budget cannot fall back to the route it limits"]


def test_a_budget_uses_only_its_own_org_or_platform_routes_and_deployments(db, org, other_org, dep):
    theirs_dep = Deployment.objects.create(name="theirs", org=other_org, provider="mock", litellm_model="openai/x",
                                           input_price_per_mtok=Decimal("1"), output_price_per_mtok=Decimal("1"))
    theirs = route_with_candidate("theirs", other_org, theirs_dep)
    mine = route_with_candidate("mine", org, dep)
    platform = route_with_candidate("platform", None, dep)
    assert errors_of(Budget(org=org, name="b", limit_tokens=5, route=theirs))["route"] == [
        "belongs to another organization"]
    assert errors_of(Budget(org=org, name="b", limit_tokens=5, deployment=theirs_dep))["deployment"] == [
        "belongs to another organization"]
    assert errors_of(Budget(org=org, name="b", limit_tokens=5, route=mine, hard_action="fallback",
                            fallback_route=theirs))["fallback_route"] == ["belongs to another organization"]
    # Platform routes and deployments (no org) are anyone's.
    Budget(org=org, name="b", limit_tokens=5, route=platform, hard_action="fallback", fallback_route=mine).full_clean()
    Budget(org=org, name="b", limit_tokens=5, deployment=dep, hard_action="fallback",
           fallback_route=platform).full_clean()


def test_a_fallback_cycle_across_two_budgets_is_refused_with_its_route_aliases(db, org, dep):
    premium, cheap = route_with_candidate("premium", org, dep), route_with_candidate("cheap", org, dep)
    first = Budget(org=org, name="premium cap", limit_usd=Decimal("10"), route=premium, hard_action="fallback",
                   fallback_route=cheap)
    first.full_clean()
    first.save()
    back = Budget(org=org, name="cheap cap", limit_usd=Decimal("1"), route=cheap, hard_action="fallback",
                  fallback_route=premium)
    assert errors_of(back)["fallback_route"] == ["fallback cycle: cheap -> premium -> cheap"]
    # Re-validating the first budget (it is excluded from the edges it is checked against) stays valid.
    first.full_clean()


def test_a_fallback_cycle_through_three_routes_is_refused_and_a_chain_is_not(db, org, dep):
    a, b, c = (route_with_candidate(alias, org, dep) for alias in ("a", "b", "c"))
    Budget.objects.create(org=org, name="a->b", limit_tokens=5, route=a, hard_action="fallback", fallback_route=b)
    Budget.objects.create(org=org, name="b->c", limit_tokens=5, route=b, hard_action="fallback", fallback_route=c)
    assert errors_of(Budget(org=org, name="c->a", limit_tokens=5, route=c, hard_action="fallback",
                            fallback_route=a))["fallback_route"] == ["fallback cycle: c -> a -> b -> c"]
    d = route_with_candidate("d", org, dep)
    Budget(org=org, name="c->d", limit_tokens=5, route=c, hard_action="fallback", fallback_route=d).full_clean()


def test_disabled_budgets_and_other_orgs_budgets_close_no_cycle(db, org, other_org, dep):
    premium, cheap = route_with_candidate("premium", org, dep), route_with_candidate("cheap", org, dep)
    Budget.objects.create(org=org, name="off", limit_tokens=5, route=premium, hard_action="fallback",
                          fallback_route=cheap, enabled=False)
    Budget(org=org, name="back", limit_tokens=5, route=cheap, hard_action="fallback",
           fallback_route=premium).full_clean()
    shared_a, shared_b = route_with_candidate("shared-a", None, dep), route_with_candidate("shared-b", None, dep)
    Budget.objects.create(org=other_org, name="theirs", limit_tokens=5, route=shared_a, hard_action="fallback",
                          fallback_route=shared_b)
    Budget(org=org, name="mine", limit_tokens=5, route=shared_b, hard_action="fallback",
           fallback_route=shared_a).full_clean()
