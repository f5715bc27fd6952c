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
def _close_database_connections(django_db_setup):
    # Depends on the test database, so it is torn down first: the connections the
    # worker threads keep (the usage writer's, the pools', and asgiref's
    # thread-sensitive thread's, which every sync_to_async call of a test and every
    # database_sync_to_async of the consumer uses) are closed before the database is
    # dropped, as at the end of a server's drain.
    yield
    from gateway.lifecycle import close_database_connections

    close_database_connections()


@pytest.fixture(scope="session", autouse=True)
def _gateway_runtime_with_communicators():
    """The consumer's background services run as in a server (tests/support/runtime.py)."""
    from tests.support.runtime import started_with_each_communicator

    with started_with_each_communicator():
        yield


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """Tests reuse names and (after a flush) row ids: start each as a fresh process
    would, with empty caches and no failed-login or password-reset counters."""
    from gateway.auth_throttle import forget_failures
    from gateway.runtime import runtime
    from tenants.password_reset import forget_requests

    runtime.reset()
    forget_failures()  # the shared (Redis) counters too
    forget_requests()
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
    written, the gateway runtime is stopped, the loop's other tasks (consumers a
    test left open, their requests) are cancelled, and the worker threads finish
    what they were doing — a write racing the flush's TRUNCATE deadlocks."""
    yield
    from billing.recorder import usage_recorder
    from gateway.runtime import runtime
    from infra import threads
    from infra.loopbound import stop_tasks

    await usage_recorder.flush(timeout=10)
    await runtime.stop()
    current = asyncio.current_task()
    pending = await stop_tasks({task for task in asyncio.all_tasks() if task is not current}, timeout=30)
    await asyncio.to_thread(threads.drain_pools)
    await asyncio.to_thread(usage_recorder.wait_for_writer_thread)
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
