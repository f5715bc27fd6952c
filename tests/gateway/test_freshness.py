"""Caches stay valid while the configuration version is unchanged, and any saved change
is seen within a fraction of a second."""
import asyncio
import time

import pytest

from gateway import freshness as fr
from gateway.models import ConfigVersion

pytestmark = [pytest.mark.django_db(transaction=True)]


def version() -> int:
    return ConfigVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0


def test_every_write_to_a_cached_table_bumps_the_version_and_last_used_stamps_do_not(org, issued_key):
    from django.utils import timezone

    from tenants.models import ApiKey

    start = version()
    org.name = "Acme Renamed"
    org.save()
    assert version() > start
    start = version()
    ApiKey.objects.filter(pk=issued_key.api_key.pk).update(last_used_at=timezone.now())
    assert version() == start  # "last used" stamps change nothing a gateway caches
    ApiKey.objects.filter(pk=issued_key.api_key.pk).update(revoked_at=timezone.now())  # no signals: a raw update
    assert version() > start
    start = version()
    issued_key.api_key.delete()
    assert version() > start


def test_budget_and_key_writes_still_bump_the_version_after_the_dashboard_migrations(org, issued_key):
    """SQLite drops a table's triggers when a migration rebuilds it (billing 0005,
    tenants 0004): gateway 0010 puts them back."""
    from decimal import Decimal

    from billing.models import Budget
    from tenants.models import ApiKey

    start = version()
    budget = Budget.objects.create(org=org, name="b", limit_usd=Decimal("1"))
    assert version() > start
    start = version()
    Budget.objects.filter(pk=budget.pk).update(limit_usd=Decimal("2"))
    assert version() > start
    start = version()
    ApiKey.objects.filter(pk=issued_key.api_key.pk).update(kind=ApiKey.Kind.PLAYGROUND)
    assert version() > start


def counting_load():
    """A loader returning how many times it was called: 1 on the first load, 2 after a reload."""
    loads = []

    async def load():
        loads.append(1)
        return len(loads)

    return load


async def started_poller() -> fr.Freshness:
    """This loop's configuration poller, started, with a version read."""
    fresh = fr.freshness()
    fresh.start()
    await asyncio.sleep(2 * fr.POLL_SECONDS)
    return fresh


async def test_an_entry_outlives_a_second_while_nothing_changes_and_reloads_after_a_change(org):
    fresh = await started_poller()
    cache, load = fr.FreshCache(), counting_load()

    assert await cache.get_or_load("k", load) == 1
    real_monotonic = time.monotonic
    try:
        # Two seconds later (as the cache sees it), nothing changed: still cached.
        fr.time.monotonic = lambda: real_monotonic() + 2
        fresh.version_read_at = fr.time.monotonic()
        assert await cache.get_or_load("k", load) == 1
    finally:
        fr.time.monotonic = real_monotonic
    org.name = "changed"
    await org.asave()
    deadline = real_monotonic() + 3
    while fresh.current_version() != await asyncio.to_thread(version) and real_monotonic() < deadline:
        await asyncio.sleep(0.05)
    try:
        fr.time.monotonic = lambda: real_monotonic() + 2
        fresh.version_read_at = fr.time.monotonic()
        assert await cache.get_or_load("k", load) == 2  # a new version: reloaded
    finally:
        fr.time.monotonic = real_monotonic


async def test_a_change_reaches_an_entry_loaded_a_moment_ago_at_the_next_poll(org):
    """With the poller's version trusted, the version alone decides: an entry loaded
    just before a change is not kept for its first second."""
    fresh = await started_poller()
    cache, load = fr.FreshCache(), counting_load()

    real_monotonic = time.monotonic
    loaded_at = real_monotonic()
    assert await cache.get_or_load("k", load) == 1
    org.name = "changed again"
    await org.asave()
    wanted = await asyncio.to_thread(version)
    while fresh.current_version() != wanted and real_monotonic() < loaded_at + 3:
        await asyncio.sleep(0.02)
    assert fresh.current_version() == wanted
    try:
        # As the cache sees it, the entry is no older than when it was loaded.
        fr.time.monotonic = lambda: loaded_at
        fresh.version_read_at = loaded_at
        assert await cache.get_or_load("k", load) == 2
    finally:
        fr.time.monotonic = real_monotonic


async def test_without_a_trusted_version_an_entry_lives_for_the_fallback_second():
    cache, load = fr.FreshCache(), counting_load()

    assert await cache.get_or_load("k", load) == 1
    assert await cache.get_or_load("k", load) == 1
    real_monotonic = time.monotonic
    try:
        fr.time.monotonic = lambda: real_monotonic() + fr.FALLBACK_SECONDS
        assert await cache.get_or_load("k", load) == 2
    finally:
        fr.time.monotonic = real_monotonic


async def test_requests_missing_the_same_entry_at_once_share_one_load():
    cache, loads = fr.FreshCache(), []
    release = asyncio.Event()

    async def load():
        loads.append(1)
        await release.wait()
        return "value"

    waiters = [asyncio.ensure_future(cache.get_or_load("k", load)) for _ in range(50)]
    await asyncio.sleep(0.01)
    waiters[0].cancel()  # one request goes away while waiting: the others still get the value
    release.set()
    results = await asyncio.gather(*waiters[1:])
    assert results == ["value"] * 49 and len(loads) == 1
    assert await cache.get_or_load("k", load) == "value" and len(loads) == 1


async def test_a_failed_load_reaches_every_waiter_and_the_next_request_tries_again():
    cache, attempts = fr.FreshCache(), []

    async def load():
        attempts.append(1)
        await asyncio.sleep(0.01)
        if len(attempts) == 1:
            raise RuntimeError("database away")
        return "value"

    results = await asyncio.gather(*(cache.get_or_load("k", load) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and len(attempts) == 1
    assert await cache.get_or_load("k", load) == "value"


async def test_open_keys_are_rechecked_in_one_query_off_the_request_path(issued_key, org, monkeypatch):
    fresh = fr.freshness()
    fresh.key_opened(issued_key.api_key.pk)
    fresh.start()
    await asyncio.sleep(3 * fr.POLL_SECONDS)
    assert fresh.key_problem(issued_key.api_key.pk) == ""
    from gateway import auth
    from tenants.access import KeyPrincipal

    def no_query(_key_id):
        raise AssertionError("the request path queried the database")

    monkeypatch.setattr(auth, "api_key_access_problem", no_query)
    principal = KeyPrincipal(key_id=issued_key.api_key.pk, key_public_id="", key_prefix="", key_name="",
                             org_id=org.pk, org_public_id="", org_slug="", org_tier="", allowed_models=(),
                             max_tokens_per_request=None, store_prompts=False)
    assert await auth.recheck_principal(principal) == ""
    org.status = "suspended"
    await org.asave()
    deadline = time.monotonic() + 3
    while fresh.key_problem(issued_key.api_key.pk) == "" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert "suspended" in fresh.key_problem(issued_key.api_key.pk)
    fresh.key_closed(issued_key.api_key.pk)


def test_org_writes_still_bump_the_version_after_the_org_time_zone_migration(org):
    """tenants 0006 added a column to the organization table (SQLite rebuilds it and drops
    its triggers): gateway 0011 puts them back, with the new column counted."""
    from tenants.models import Organization

    start = version()
    Organization.objects.filter(pk=org.pk).update(end_user_rpm_limit=5)
    assert version() > start
    start = version()
    Organization.objects.filter(pk=org.pk).update(time_zone="Europe/Paris")
    assert version() > start


def test_turning_a_deployments_lean_stream_switch_bumps_the_version(make_deployment):
    """catalog 0002 added `Deployment.lean_stream` (SQLite may rebuild the table and drop
    its triggers; PostgreSQL's trigger lists its columns): gateway 0012 puts them back."""
    from catalog.models import Deployment

    deployment = make_deployment("switchable")
    start = version()
    Deployment.objects.filter(pk=deployment.pk).update(lean_stream=False)
    assert version() > start
