"""The usage recorder (billing/recorder.py) against the real database of the pass
(SQLite, then PostgreSQL) and the pass's budget ledger: one record the database
refuses never holds up the others, it is set aside durably in the dead-letter file
(billing/deadletter.py), and `manage.py replay_usage` writes it later
(tests/billing/test_replay_usage.py); connection errors are retried; a shutdown that
gives up sets the unwritten records aside instead of dropping them."""
import asyncio
import logging
import stat
import uuid
from decimal import Decimal

import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from billing import deadletter, recorder
from billing.budgets import BudgetRule, counter_refs, plan_lease
from billing.ledger import RedisLedger, ledger
from billing.models import Budget, UsageRecord
from catalog.money import Prices
from billing.recorder import usage_recorder
from tests.support.usage import data_dir, dead_letters, draft_for, in_thread, run_replay_usage  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db(transaction=True)]

GOOD = 20  # records on each side of the bad one, all in one batch with it
_real_write_batch = recorder._write_batch


@pytest.fixture
def fast_retries(monkeypatch):
    monkeypatch.setattr(recorder, "RETRY_DELAYS", (0.01,))


def postgres_only(why="only PostgreSQL refuses NUL in text"):
    if connection.vendor != "postgresql":
        pytest.skip(why)


# Each refused for good by the database of either pass (NUL and a numeric overflow
# by PostgreSQL only: SQLite stores both as given).
BAD = {
    "lone surrogate in end_user": lambda key: {"end_user": "bob\ud800"},
    "org that does not exist": lambda key: {"org_id": key.api_key.org_id + 10_000},
    "negative token count": lambda key: {"prompt_tokens": -1},
    "cost too large for its column": lambda key: {"cost_usd": Decimal("1e13")},
    "NUL in requested_model": lambda key: {"requested_model": "gpt\x00"},
    "NUL in the route's JSON": lambda key: {"route": {"route": "r\x00"}},
}


@pytest.mark.parametrize("kind", list(BAD))
async def test_good_records_around_a_bad_one_are_all_written_and_the_bad_one_set_aside(
        kind, issued_key, data_dir, caplog):
    if "NUL" in kind or "too large" in kind:
        postgres_only("SQLite stores this record as given")
    before = [draft_for(issued_key) for _ in range(GOOD)]
    bad = draft_for(issued_key, client_request_id="bad", **BAD[kind](issued_key))
    after = [draft_for(issued_key) for _ in range(GOOD)]
    with caplog.at_level(logging.ERROR, logger="billing.recorder"):
        for draft in before + [bad] + after:
            usage_recorder.submit(draft)
        assert await usage_recorder.flush(timeout=20)

    written = {pk async for pk in UsageRecord.objects.values_list("pk", flat=True)}
    assert written == {d.request_id for d in before + after}
    [entry] = dead_letters()
    assert entry["request_id"] == str(bad.request_id) and entry["reason"] == "permanent_error"
    assert entry["error"].split(":")[0] in {"DataError", "IntegrityError", "UnicodeEncodeError", "ValueError",
                                            "InvalidOperation"}, entry["error"]
    assert deadletter.draft_from(entry) == bad  # every field, exactly as submitted
    assert stat.S_IMODE(deadletter.path().stat().st_mode) == 0o600
    assert stat.S_IMODE(deadletter.path().parent.stat().st_mode) == 0o700
    [line] = [r.getMessage() for r in caplog.records if str(bad.request_id) in r.getMessage()]
    assert "cannot be written" in line and entry["error"] in line and "\x00" not in line

    # Later records are written as usual: nothing queues behind the bad one.
    late = draft_for(issued_key)
    usage_recorder.submit(late)
    assert await usage_recorder.flush(timeout=10)
    assert await UsageRecord.objects.filter(pk=late.request_id).aexists()


async def test_the_budget_lease_of_a_set_aside_record_is_settled_as_spend(issued_key, org):
    """The request was served: what it cost still counts against its budget."""
    budget = await Budget.objects.acreate(org=org, name="m", window="month", limit_usd=Decimal("1"))
    rule = await in_thread(lambda: BudgetRule.from_model(Budget.objects.get(pk=budget.pk)))
    refs = counter_refs([rule], end_user="", at=timezone.now())
    books = ledger()  # the recorder's (this test's event loop's)
    if isinstance(books, RedisLedger):  # this test's own counters (budget ids repeat between runs)
        books.prefix += f":{uuid.uuid4().hex[:8]}"
        books._epoch, books._leases = f"{books.prefix}:epoch", f"{books.prefix}:leases"
    leased = []
    for end_user in ("bob\ud800", "alice"):
        lease = plan_lease(request_id=uuid.uuid4(), org_id=org.pk, refs=refs, prices=Prices(Decimal("2.5"), Decimal("10")),
                           prompt_tokens=10, max_tokens=100, usage={})
        await books.reserve(lease)
        draft = draft_for(issued_key, request_id=lease.request_id, end_user=end_user,
                          cost_usd=Decimal("0.000125"), prompt_tokens=10, completion_tokens=10)
        draft.lease = lease
        leased.append(draft)
        usage_recorder.submit(draft)
    assert await usage_recorder.flush(timeout=20)
    assert [e["record"]["end_user"] for e in dead_letters()] == ["bob\ud800"]
    [state] = await books.snapshot(refs)
    assert (state.spent_nanos, state.spent_tokens) == (2 * 125_000, 2 * 20)
    assert (state.reserved_nanos, state.reserved_tokens) == (0, 0)


async def test_a_transient_error_is_retried_then_written(issued_key, monkeypatch, fast_retries, caplog):
    failures = []
    real = recorder._write_batch

    def flaky(books, batch):
        if len(failures) < 3:
            failures.append(len(batch))
            raise OperationalError("server closed the connection unexpectedly")
        real(books, batch)

    monkeypatch.setattr(recorder, "_write_batch", flaky)
    drafts = [draft_for(issued_key) for _ in range(5)]
    with caplog.at_level(logging.WARNING, logger="billing.recorder"):
        for draft in drafts:
            usage_recorder.submit(draft)
        assert await usage_recorder.flush(timeout=10)
    assert failures == [5, 5, 5]  # the whole batch each time: not split, not set aside
    assert await UsageRecord.objects.acount() == 5
    assert not deadletter.path().exists()
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 3


async def test_a_dropped_database_connection_is_retried_then_written(issued_key, fast_retries):
    postgres_only()
    first = draft_for(issued_key)
    usage_recorder.submit(first)
    assert await usage_recorder.flush(timeout=10)

    def backend_pid():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            return cursor.fetchone()[0]

    writer = await asyncio.wrap_future(usage_recorder._executor.submit(backend_pid))

    def terminate():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [writer])

    await in_thread(terminate)
    second = draft_for(issued_key)
    usage_recorder.submit(second)
    assert await usage_recorder.flush(timeout=20)
    assert await UsageRecord.objects.filter(pk=second.request_id).aexists()
    assert not deadletter.path().exists()


async def test_records_still_unwritten_when_the_shutdown_flush_gives_up_are_set_aside(
        issued_key, monkeypatch, fast_retries, caplog):
    def database_down(books, batch):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(recorder, "_write_batch", database_down)
    drafts = [draft_for(issued_key) for _ in range(7)]
    with caplog.at_level(logging.ERROR, logger="billing.recorder"):
        for draft in drafts:
            usage_recorder.submit(draft)
        assert not await usage_recorder.flush(timeout=0.5, set_aside_on_timeout=True)
    assert sorted(e["request_id"] for e in dead_letters()) == sorted(str(d.request_id) for d in drafts)
    assert {e["reason"] for e in dead_letters()} == {"shutdown"}
    assert any("7 records still unwritten" in r.getMessage() and "set aside" in r.getMessage()
               for r in caplog.records)

    # The database is back: the recorder still works, and replay writes the rest.
    monkeypatch.setattr(recorder, "_write_batch", _real_write_batch)
    later = draft_for(issued_key)
    usage_recorder.submit(later)
    assert await usage_recorder.flush(timeout=10)
    assert "7 written, 0 already present, 0 still failing" in await run_replay_usage()
    assert await UsageRecord.objects.acount() == 8


async def test_a_flush_that_is_not_a_shutdown_sets_nothing_aside(issued_key, monkeypatch, fast_retries):
    monkeypatch.setattr(recorder, "_write_batch", lambda books, batch: (_ for _ in ()).throw(
        OperationalError("could not connect to server")))
    usage_recorder.submit(draft_for(issued_key))
    assert not await usage_recorder.flush(timeout=0.3)
    assert not deadletter.path().exists()
    monkeypatch.setattr(recorder, "_write_batch", _real_write_batch)
    assert await usage_recorder.flush(timeout=10)  # still queued, written once the database is back
    assert await UsageRecord.objects.acount() == 1
