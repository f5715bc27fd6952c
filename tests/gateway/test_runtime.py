"""The gateway process's runtime: its background services start once, stop together
(the usage writer after writing what it holds), and a reset leaves the process as
fresh as a new one."""
import asyncio
import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from billing.models import UsageRecord
from billing.recorder import usage_recorder
from billing.usage import UsageDraft
from gateway.runtime import runtime
from infra.threads import drain_pools
from tests.support.runtime import background_tasks, expected_tasks

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_start_is_idempotent():
    assert not runtime.running and background_tasks() == []
    await runtime.start()
    first = runtime.services()
    await runtime.start()
    await runtime.start()
    assert runtime.running and runtime.services() == first
    assert background_tasks() == expected_tasks()  # each service once, however often started


async def test_stop_stops_every_task_it_started_and_a_start_after_it_starts_them_again():
    await runtime.start()
    assert background_tasks() == expected_tasks()
    await runtime.stop()
    await asyncio.sleep(0)
    assert background_tasks() == [] and not runtime.running and runtime.services() == []
    await runtime.stop()  # stopping a stopped runtime is harmless
    await runtime.start()
    assert background_tasks() == expected_tasks()


async def test_stop_writes_the_usage_records_still_queued(issued_key):
    await runtime.start()
    request_ids = [uuid.uuid4() for _ in range(5)]
    for request_id in request_ids:
        usage_recorder.submit(UsageDraft(
            request_id=request_id, client_request_id="queued at stop", org_id=issued_key.api_key.org_id,
            api_key_id=issued_key.api_key.pk, requested_model="mock-fast", status="completed",
            finish_reason="stop", prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.000075"),
            route={"route": "r", "tried": ["mock-fast"]}))
    await runtime.stop()  # no flush first: stopping writes them
    written = await UsageRecord.objects.filter(pk__in=request_ids).acount()
    assert written == len(request_ids)


async def test_reset_is_refused_while_the_runtime_runs():
    await runtime.start()
    with pytest.raises(RuntimeError, match="stop the gateway runtime"):
        runtime.reset()
    await runtime.stop()
    runtime.reset()


def test_a_runtime_left_on_a_closed_loop_starts_afresh_on_the_next():
    """Tests run one event loop after another; so may a tool. The services of a loop
    that closed are not reused on the next (they are bound to their loop)."""
    async def start() -> list[str]:
        await runtime.start()
        return background_tasks()

    async def start_and_stop() -> list[str]:
        await runtime.start()
        names = background_tasks()
        await runtime.stop()
        return names

    try:
        assert asyncio.run(start()) == expected_tasks()  # the loop closes with the runtime started
        assert asyncio.run(start_and_stop()) == expected_tasks()
        runtime.reset()  # allowed: its loop is closed
    finally:
        drain_pools()


async def test_reset_forgets_deployment_health_login_bursts_and_cached_key_checks(issued_key, org, monkeypatch):
    from gateway import auth
    from gateway.health import FAILURE_THRESHOLD, health
    from tenants.access import KeyPrincipal
    from tenants.auth_audit import Failure, failure_audit
    from tenants.models import ApiKey

    for _ in range(FAILURE_THRESHOLD):
        health.record_failure(4242)
    assert not health.is_available(4242)
    failure_audit.note(Failure(org=None, actor="", action="auth.failed", reason="malformed key",
                               source="websocket", address="203.0.113.9", name=""))
    assert failure_audit.pending()
    monkeypatch.setattr(auth, "RECHECK_SECONDS", 60.0)  # however slow the machine, still cached below
    key = issued_key.api_key
    principal = KeyPrincipal(key_id=key.pk, key_public_id="", key_prefix="", key_name="", org_id=org.pk,
                             org_public_id="", org_slug="", org_tier="", allowed_models=(),
                             max_tokens_per_request=None, store_prompts=False)
    assert await auth.recheck_principal(principal) == ""
    await ApiKey.objects.filter(pk=key.pk).aupdate(revoked_at=timezone.now())
    assert await auth.recheck_principal(principal) == ""  # the answer is cached

    runtime.reset()

    assert health.is_available(4242)
    assert not failure_audit.pending()
    assert await auth.recheck_principal(principal) == "key revoked"
