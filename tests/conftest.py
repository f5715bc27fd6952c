"""Shared fixtures: the mock LLM process, tenants, keys and deployments."""
from __future__ import annotations

import asyncio
import inspect
import os
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings

from tests.support.mockllm import MockLLMProcess
from tests.support.services import require


# Property-based tests: no per-example deadline (examples cross real sockets on a
# shared machine); under CI derandomized and without the example database, so a
# run is reproducible and CI time is bounded by each test's max_examples.
hypothesis_settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile("ci", parent=hypothesis_settings.get_profile("dev"), derandomize=True,
                                     database=None, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_configure(config):
    # In the services pass, a test run that silently fell back to SQLite or
    # the in-memory layer would prove nothing.
    if os.environ.get("DATABASE_URL"):
        require("postgresql")
    if os.environ.get("REDIS_URL"):
        require("redis")


@pytest.fixture(scope="session", autouse=True)
def _close_usage_writer_connection():
    yield
    from billing.recorder import usage_recorder

    usage_recorder.close_connections()  # lets the test database be dropped
    from infra.threads import close_db_connections

    close_db_connections()


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Tests reuse names and (after a flush) row ids: start each with empty caches."""
    from gateway import auth, auth_throttle, budgeting, policies, routing
    from gateway.health import health
    from tenants.auth_audit import failure_audit

    policies._cache.clear()
    budgeting._budget_cache.clear()
    routing._resolution_cache.clear()
    auth._recheck_cache.clear()
    health.clear()
    failure_audit.clear()  # failed-login bursts and throttle counters: each test starts with none
    auth_throttle._known.clear()
    auth_throttle.forget_failures()
    yield


def pytest_collection_modifyitems(items):
    for item in items:
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            # Appended: set up after the database fixtures, so torn down before
            # them (before a transactional test's flush) and before the loop closes.
            item.fixturenames.append("_stop_leftover_tasks")


@pytest.fixture
async def _stop_leftover_tasks():
    """(Added to every async test.) Finish the test's background work before the
    database is flushed and the event loop closes: usage records still queued are
    written, the loop's background tasks (health listener, presence refresher,
    lease keeper, consumers a test left open) are stopped, and the worker threads
    finish what they were doing — a write racing the flush's TRUNCATE deadlocks.

    A cancel that lands while redis-py is mid-read can be turned into a timeout and
    retried inside redis-py, so a single cancel may be lost and the loop's close
    would wait forever; cancelling again until each task ends cannot hang.
    """
    yield
    from billing.recorder import usage_recorder

    await usage_recorder.flush(timeout=10)
    current = asyncio.current_task()
    pending = {task for task in asyncio.all_tasks() if task is not current}
    deadline = asyncio.get_running_loop().time() + 30
    while pending and asyncio.get_running_loop().time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)
    from infra import threads
    from infra.loopbound import on_every_worker

    await asyncio.to_thread(threads.drain_pools)
    await asyncio.to_thread(on_every_worker, usage_recorder._executor)
    if pending:
        for task in pending:
            task.print_stack()
        pytest.fail(f"{len(pending)} background task(s) would not stop: {pending}")


@pytest.fixture(scope="session")
def mockllm():
    with MockLLMProcess(rate=0, ttft_ms=0) as mock:
        yield mock


@pytest.fixture
def org(db):
    from tenants.services import org_create

    return org_create(slug="acme", name="Acme Inc")


@pytest.fixture
def other_org(db):
    from tenants.services import org_create

    return org_create(slug="globex", name="Globex")


@pytest.fixture
def issued_key(org):
    from tenants.services import api_key_create

    return api_key_create(org=org, name="test key")


@pytest.fixture
def mock_credential(db):
    from catalog.models import ProviderCredential

    credential = ProviderCredential(name="mock", provider="mock")
    credential.set_secret("mock-key-for-tests")
    credential.save()
    return credential


@pytest.fixture
def make_deployment(db, mockllm, mock_credential):
    from catalog.models import Deployment

    def make(name="mock-fast", *, org=None, input_price="2.50", output_price="10.00", **fields):
        fields.setdefault("provider", "mock")
        fields.setdefault("litellm_model", f"openai/{name}")
        fields.setdefault("api_base", mockllm.api_base)
        fields.setdefault("credential", mock_credential)
        return Deployment.objects.create(
            name=name, org=org, input_price_per_mtok=Decimal(input_price), output_price_per_mtok=Decimal(output_price),
            **fields,
        )

    return make
