"""The budget ledgers directly: time-controlled windows, idempotent settlement, lease
expiry, and (with Redis) counters rebuilt from the database. The database ledger runs
in both passes (SQLite, then PostgreSQL); the Redis ledger in the services pass."""
import asyncio
import json
import uuid
from datetime import datetime, timezone as dt_timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from billing.budgets import BudgetBusy, BudgetExhausted, BudgetRule, counter_refs, plan_lease
from billing.ledger import DatabaseLedger, RedisLedger
from billing.models import Budget, UsageRecord
from catalog.money import Prices
from billing.usage import UsageDraft
from tests.support.services import require

pytestmark = [pytest.mark.django_db(transaction=True)]

PRICES = Prices(Decimal("2.50"), Decimal("10.00"))


@pytest.fixture(params=["database", "redis"])
async def books(request, settings):  # async: Redis clients belong to the running loop
    if request.param == "database":
        return DatabaseLedger()
    require("redis")
    ledger = RedisLedger(settings.REDIS_URL)
    ledger.prefix += f":{uuid.uuid4().hex[:8]}"  # each test its own keys
    ledger._epoch, ledger._leases = f"{ledger.prefix}:epoch", f"{ledger.prefix}:leases"
    return ledger


def rule_of(budget: Budget) -> BudgetRule:
    return BudgetRule.from_model(Budget.objects.select_related("fallback_route").get(pk=budget.pk))


def lease_for(rule, *, at, prompt=10, max_tokens=100, usage=None, issued_key=None):
    refs = counter_refs([rule], end_user="", at=at)
    return plan_lease(request_id=uuid.uuid4(), org_id=rule.org_id, refs=refs, prices=PRICES, prompt_tokens=prompt,
                      max_tokens=max_tokens, usage=usage or {})


async def settle(books, lease, *, cost: Decimal, tokens: int, issued_key, at):
    """Write the request's usage record and settle its lease, as the usage writer does."""
    draft = UsageDraft(request_id=lease.request_id, client_request_id="r", org_id=lease.org_id,
                       api_key_id=issued_key.api_key.pk, requested_model="m", started_at=at,
                       status=UsageRecord.Status.COMPLETED, prompt_tokens=tokens, cost_usd=cost)
    draft.lease = lease
    await asyncio.to_thread(books.write_and_settle, [draft])
    await books.settle_written([draft])


async def test_a_window_rolls_over_at_the_calendar_boundary(books, org, issued_key):
    budget = await Budget.objects.acreate(org=org, name="hourly", window="hour", limit_tokens=300)
    rule = await asyncio.to_thread(rule_of, budget)
    before = datetime(2026, 11, 27, 10, 59, 59, tzinfo=dt_timezone.utc)
    after = datetime(2026, 11, 27, 11, 0, 0, tzinfo=dt_timezone.utc)
    first = lease_for(rule, at=before)  # 10 + 10% + 16 = 27 prompt + 100 = 127 tokens
    await books.reserve(first)
    await books.reserve(second := lease_for(rule, at=before))
    with pytest.raises(BudgetBusy):  # 254 reserved + 127 > 300, but nothing is spent yet
        await books.reserve(lease_for(rule, at=before))
    await books.reserve(lease_for(rule, at=after))  # a new hour, a new counter
    await settle(books, first, cost=Decimal("0.001"), tokens=110, issued_key=issued_key, at=before)
    await settle(books, second, cost=Decimal("0.001"), tokens=110, issued_key=issued_key, at=before)
    [state] = await books.snapshot(counter_refs([rule], end_user="", at=before))
    assert (state.spent_tokens, state.reserved_tokens) == (220, 0)
    with pytest.raises(BudgetExhausted) as refused:  # 220 spent + 127 > 300: used up until 11:00
        await books.reserve(lease_for(rule, at=before))
    assert "resets at 2026-11-27T11:00:00Z" in refused.value.message()


async def test_settlement_is_idempotent_and_a_release_frees_the_room(books, org, issued_key):
    budget = await Budget.objects.acreate(org=org, name="m", window="month", limit_usd=Decimal("0.0025"))
    rule = await asyncio.to_thread(rule_of, budget)
    now = timezone.now()
    lease = lease_for(rule, at=now)  # 27 x 2.5 + 100 x 10 = 1067.5 micro-dollars
    await books.reserve(lease)
    assert lease.after[0].reserved_nanos == 1_067_500
    await books.reserve(other := lease_for(rule, at=now))
    with pytest.raises(BudgetBusy):
        await books.reserve(lease_for(rule, at=now))
    await books.release(other)
    await books.release(other)  # twice: nothing more is given back
    await settle(books, lease, cost=Decimal("0.000500000001"), tokens=60, issued_key=issued_key, at=now)
    await books.settle_written([_draft_with(lease)])  # settling again changes nothing
    [state] = await books.snapshot(counter_refs([rule], end_user="", at=now))
    assert (state.spent_nanos, state.spent_tokens, state.reserved_nanos) == (500_001, 60, 0)  # rounded up


def _draft_with(lease):
    draft = UsageDraft(request_id=lease.request_id, client_request_id="r", org_id=lease.org_id, api_key_id=0,
                       requested_model="m", cost_usd=Decimal("1"), prompt_tokens=1000)
    draft.lease = lease
    return draft


async def test_an_expired_lease_is_billed_from_its_checkpoint(books, org, issued_key, make_deployment, settings):
    settings.GATEWAY = {**settings.GATEWAY, "BUDGET_LEASE_SECONDS": 1}
    deployment = await asyncio.to_thread(make_deployment, "mock-fast")
    budget = await Budget.objects.acreate(org=org, name="m", window="month", limit_usd=Decimal("1"))
    rule = await asyncio.to_thread(rule_of, budget)
    now = timezone.now()
    usage = {"client_request_id": "lost-1", "api_key_id": issued_key.api_key.pk, "requested_model": "mock-fast",
             "end_user": "", "started_at": now.isoformat(), "deployment_id": deployment.pk,
             "deployment_name": "mock-fast", "provider": "mock", "via_route_id": None, "route": {},
             "prompt_tokens": 10, "max_tokens": 100, "input_price_per_mtok": "2.5", "output_price_per_mtok": "10"}
    lease = lease_for(rule, at=now, usage=usage)
    await books.reserve(lease)
    lease.completion_tokens = 42
    await books.extend([lease])  # the checkpoint reaches the ledger
    await asyncio.sleep(1.2)
    assert await books.reap() == 1
    assert await books.reap() == 0
    record = await UsageRecord.objects.aget(pk=lease.request_id)
    assert (record.status, record.prompt_tokens, record.completion_tokens) == ("gateway_lost", 10, 42)
    assert record.cost_usd == Decimal("0.000445")  # 10 x 2.5 + 42 x 10 micro-dollars
    [state] = await books.snapshot(counter_refs([rule], end_user="", at=now))
    assert (state.spent_nanos, state.reserved_nanos) == (445_000, 0)


async def test_a_lost_request_whose_record_cannot_be_written_is_set_aside_and_still_settled(
        books, org, issued_key, settings, tmp_path):
    """One unwritable record must not stop the reaping of every other lost request."""
    from billing import deadletter

    settings.DATA_DIR = tmp_path
    settings.GATEWAY = {**settings.GATEWAY, "BUDGET_LEASE_SECONDS": 1}
    budget = await Budget.objects.acreate(org=org, name="m", window="month", limit_usd=Decimal("1"))
    rule = await asyncio.to_thread(rule_of, budget)
    now = timezone.now()
    # Text the record's column cannot take but the lease's payload can (PostgreSQL's jsonb
    # refuses a lone surrogate too; SQLite does not enforce a column's length).
    unwritable = "m" * 201 if connection.vendor == "postgresql" else "bob\ud800"
    leases = []
    for end_user in (unwritable, "alice"):
        usage = {"client_request_id": "lost", "api_key_id": issued_key.api_key.pk, "requested_model": "m",
                 "end_user": end_user, "started_at": now.isoformat(), "deployment_id": None,
                 "deployment_name": "", "provider": "mock", "via_route_id": None, "route": {},
                 "prompt_tokens": 10, "max_tokens": 100, "input_price_per_mtok": "2.5", "output_price_per_mtok": "10"}
        leases.append(lease := lease_for(rule, at=now, usage=usage))
        await books.reserve(lease)
    await asyncio.sleep(1.2)
    assert await books.reap() == 2
    assert await books.reap() == 0
    assert [r.end_user async for r in UsageRecord.objects.all()] == ["alice"]
    [entry] = [json.loads(line) for line in deadletter.path().read_text().splitlines()]
    assert (entry["request_id"], entry["record"]["end_user"]) == (str(leases[0].request_id), unwritable)
    [state] = await books.snapshot(counter_refs([rule], end_user="", at=now))
    assert (state.spent_nanos, state.reserved_nanos) == (2 * 25_000, 0)  # both billed from their checkpoint


async def test_redis_counters_are_rebuilt_from_usage_and_leases_put_back(org, issued_key, settings):
    require("redis")
    settings.GATEWAY = {**settings.GATEWAY, "BUDGET_LEASE_EXTEND_SECONDS": 1}
    books = RedisLedger(settings.REDIS_URL)
    books.prefix += f":{uuid.uuid4().hex[:8]}"
    books._epoch, books._leases = f"{books.prefix}:epoch", f"{books.prefix}:leases"
    budget = await Budget.objects.acreate(org=org, name="m", window="month", limit_tokens=1000)
    rule = await asyncio.to_thread(rule_of, budget)
    now = timezone.now()
    done = lease_for(rule, at=now)
    await books.reserve(done)
    await settle(books, done, cost=Decimal("0.001"), tokens=300, issued_key=issued_key, at=now)
    held = lease_for(rule, at=now)  # 127 tokens, in flight
    await books.reserve(held)
    keys = [k async for k in books._redis.scan_iter(f"{books.prefix}:*")]
    await books._redis.delete(*keys)  # Redis lost everything
    started = asyncio.get_running_loop().time()
    admitted = lease_for(rule, at=now)
    reserve = asyncio.create_task(books.reserve(admitted))
    await asyncio.sleep(0.5)
    await books.extend([held])  # the serving process notices and puts its lease back
    await reserve
    # The admission waited for the living processes to re-assert their leases.
    assert asyncio.get_running_loop().time() - started >= books.grace_ms() / 1000 - 0.1
    [state] = await books.snapshot(counter_refs([rule], end_user="", at=now))
    assert state.spent_tokens == 300  # rebuilt from the usage record
    assert state.reserved_tokens == 2 * 127  # the re-asserted lease and the new one
    with pytest.raises(BudgetBusy):
        await books.reserve(lease_for(rule, at=now, max_tokens=500))  # 300 + 254 + 527 > 1000


async def test_a_budget_created_mid_window_counts_the_spend_already_in_it(books, org, issued_key):
    now = timezone.now()
    earlier = UsageDraft(request_id=uuid.uuid4(), client_request_id="before", org_id=org.pk,
                         api_key_id=issued_key.api_key.pk, requested_model="m", started_at=now,
                         status=UsageRecord.Status.COMPLETED, prompt_tokens=500, cost_usd=Decimal("0.001"))
    await asyncio.to_thread(books.write_and_settle, [earlier])
    budget = await Budget.objects.acreate(org=org, name="late", window="month", limit_usd=Decimal("0.002"))
    rule = await asyncio.to_thread(rule_of, budget)
    with pytest.raises(BudgetExhausted) as refused:  # $0.001 spent + $0.0010675 > $0.002
        await books.reserve(lease_for(rule, at=now))
    assert "$0.001 of $0.002 spent" in refused.value.message()


# --- Used up or busy: only settled spend uses a budget up --------------------------------

async def test_reservations_in_flight_make_a_budget_busy_and_only_settled_spend_uses_it_up(books, org, issued_key):
    budget = await Budget.objects.acreate(org=org, name="trial", window="lifetime", limit_usd=Decimal("0.0025"))
    rule = await asyncio.to_thread(rule_of, budget)
    now = timezone.now()
    first, second = lease_for(rule, at=now), lease_for(rule, at=now)  # $0.0010675 each at worst
    await books.reserve(first)
    await books.reserve(second)
    with pytest.raises(BudgetBusy) as busy:  # nothing spent: the two reservations are in the way
        await books.reserve(lease_for(rule, at=now))
    assert (busy.value.state.spent_nanos, busy.value.state.reserved_nanos) == (0, 2_135_000)
    assert busy.value.message() == (
        "budget 'trial' (organization, lifetime) is busy: $0 of $0.0025 spent and $0.002135 reserved by requests "
        "in flight, and this request could cost up to $0.0010675; it is not used up: retry when the reservations "
        "in flight settle")
    # The first settles far below its worst case: the third now fits.
    await settle(books, first, cost=Decimal("0.0003"), tokens=40, issued_key=issued_key, at=now)
    await books.reserve(third := lease_for(rule, at=now))
    await settle(books, second, cost=Decimal("0.0003"), tokens=40, issued_key=issued_key, at=now)
    await settle(books, third, cost=Decimal("0.0003"), tokens=40, issued_key=issued_key, at=now)
    await books.reserve(fourth := lease_for(rule, at=now))  # $0.0009 spent + $0.0010675 fits
    with pytest.raises(BudgetBusy):
        await books.reserve(lease_for(rule, at=now))
    await settle(books, fourth, cost=Decimal("0.0009"), tokens=100, issued_key=issued_key, at=now)
    # $0.0018 spent: $0.0007 left, less than a worst case. Used up, whatever is in flight.
    with pytest.raises(BudgetExhausted) as used_up:
        await books.reserve(lease_for(rule, at=now))
    assert used_up.value.message() == (
        "budget 'trial' (organization, lifetime) is used up: $0.0018 of $0.0025 spent, and this request could "
        "cost up to $0.0010675; it does not reset")
    [state] = await books.snapshot(counter_refs([rule], end_user="", at=now))
    assert (state.spent_nanos, state.reserved_nanos) == (1_800_000, 0)  # a refusal reserves nothing


async def test_a_token_budget_is_busy_on_reserved_tokens_and_used_up_on_spent_ones(books, org, issued_key):
    budget = await Budget.objects.acreate(org=org, name="tokens", window="day", limit_tokens=300)
    rule = await asyncio.to_thread(rule_of, budget)
    now = timezone.now()
    await books.reserve(held := lease_for(rule, at=now))  # 127 tokens at worst
    with pytest.raises(BudgetBusy) as busy:
        await books.reserve(lease_for(rule, at=now, max_tokens=200))  # 127 + 227 > 300
    assert "0 of 300 tokens spent and 127 reserved by requests in flight" in busy.value.message()
    await settle(books, held, cost=Decimal("0.0001"), tokens=100, issued_key=issued_key, at=now)
    with pytest.raises(BudgetExhausted) as used_up:  # 100 spent + 227 > 300
        await books.reserve(lease_for(rule, at=now, max_tokens=200))
    assert "100 of 300 tokens spent, and this request could use up to 227" in used_up.value.message()
    await books.reserve(lease_for(rule, at=now))  # 100 + 127 fits


async def test_a_lease_settled_while_its_extension_is_in_flight_is_not_put_back(org, issued_key, settings):
    """The lease keeper reads its open leases, then extends them: a request settling in
    between must stay settled (putting its lease back would hold room it no longer uses,
    and bill it a second time when that lease expired and was reaped)."""
    require("redis")
    books = RedisLedger(settings.REDIS_URL)
    books.prefix += f":{uuid.uuid4().hex[:8]}"
    books._epoch, books._leases = f"{books.prefix}:epoch", f"{books.prefix}:leases"
    budget = await Budget.objects.acreate(org=org, name="m", window="month", limit_tokens=1000)
    rule = await asyncio.to_thread(rule_of, budget)
    now = timezone.now()
    lease = lease_for(rule, at=now)
    await books.reserve(lease)
    snapshot = [lease]  # what the keeper read before the request ended
    await settle(books, lease, cost=Decimal("0.001"), tokens=50, issued_key=issued_key, at=now)
    await books.extend(snapshot)  # its extension arrives after the settlement
    assert await books._redis.zcard(books._leases) == 0
    [state] = await books.snapshot(counter_refs([rule], end_user="", at=now))
    assert (state.spent_tokens, state.reserved_tokens) == (50, 0)


async def test_a_budget_deleted_since_its_rules_were_cached_limits_nothing_and_breaks_nothing(org, issued_key):
    """A gateway process may still hold a deleted budget's rule for a moment (until its
    caches refresh): the database ledger must admit and bill the request, not fail it."""
    books = DatabaseLedger()
    kept = await Budget.objects.acreate(org=org, name="kept", window="month", limit_usd=Decimal("1"))
    deleted = await Budget.objects.acreate(org=org, name="deleted", window="month", limit_usd=Decimal("1"))
    rules = [await asyncio.to_thread(rule_of, kept), await asyncio.to_thread(rule_of, deleted)]
    await deleted.adelete()
    now = timezone.now()
    lease = plan_lease(request_id=uuid.uuid4(), org_id=org.pk, refs=counter_refs(rules, end_user="", at=now),
                       prices=PRICES, prompt_tokens=10, max_tokens=100, usage={})
    await books.reserve(lease)
    assert [ref.rule.id for ref in lease.refs] == [kept.pk]
    await settle(books, lease, cost=Decimal("0.001"), tokens=50, issued_key=issued_key, at=now)
    [state] = await books.snapshot(counter_refs([rules[0]], end_user="", at=now))
    assert (state.spent_nanos, state.reserved_nanos) == (1_000_000, 0)
