"""Revoking a key or suspending an org (gateway/revocation.py) takes effect on open
sockets, however the change was made; an expired key is refused at authentication."""
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from openclaw_site.asgi import application
from tenants.models import ApiKey, Organization
from tenants.services import api_key_revoke, org_set_status
from tests.support.consumer import authed, usage_of
from tests.support.frames import next_frame, send_frame

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def deployment(make_deployment):
    return make_deployment("mock-fast")


async def start_long_request(comm, request_id="long"):
    await send_frame(comm, {"type": "llm_request", "request_id": request_id, "model": "mock-fast",
                            "prompt": "x [[mock tokens=2000 rate=50]]"})
    while (await next_frame(comm))["type"] != "llm_token":
        pass


async def read_until_close(comm, timeout=3):
    frames = []
    while True:
        output = await comm.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return frames, output["code"]
        import json

        frames.append(json.loads(output["text"]))


async def test_revoking_a_key_stops_its_requests_and_closes_its_sockets(issued_key, deployment):
    comm = await authed(issued_key)
    await start_long_request(comm)
    revoked_at = time.monotonic()
    await sync_to_async(api_key_revoke)(api_key=issued_key.api_key)
    frames, code = await read_until_close(comm)
    assert code == 4401 and time.monotonic() - revoked_at < 1
    errors = [f for f in frames if f["type"] == "error"]
    assert errors[0]["request_id"] == "long" and errors[0]["code"] == 401
    assert errors[-1]["code"] == 401 and "revoked" in errors[-1]["message"]
    record = await usage_of("long")
    assert record.status == "cancelled" and record.error_code == 401 and record.completion_tokens > 0
    await comm.disconnect()


async def test_suspending_an_org_closes_its_sockets(issued_key, deployment, org):
    comm = await authed(issued_key)
    await sync_to_async(org_set_status)(org=org, status=Organization.Status.SUSPENDED)
    frames, code = await read_until_close(comm)
    assert code == 4401 and "suspended" in frames[-1]["message"]
    await comm.disconnect()


async def test_a_revocation_made_from_a_shell_stops_the_stream_and_closes_within_a_second(issued_key, deployment):
    comm = await authed(issued_key)
    await start_long_request(comm)
    # A raw UPDATE: no service, no broadcast. The background re-check of open keys catches it.
    from django.utils import timezone

    await ApiKey.objects.filter(pk=issued_key.api_key.pk).aupdate(revoked_at=timezone.now())
    revoked_at = time.monotonic()
    frames, code = await read_until_close(comm)
    assert code == 4401 and time.monotonic() - revoked_at < 1.0
    assert frames[-1]["code"] == 401 and "key revoked" in frames[-1]["message"], frames[-3:]
    await comm.disconnect()
    assert (await usage_of("long")).status == "cancelled"


@pytest.fixture
def expired_key(org):
    from datetime import timedelta

    from django.utils import timezone

    from tenants.services import api_key_create

    return api_key_create(org=org, name="old", expires_at=timezone.now() - timedelta(minutes=1))


async def test_an_expired_key_gets_401_and_close_4401(expired_key):
    comm = WebsocketCommunicator(application, "/websocket")
    await comm.connect()
    await send_frame(comm, {"type": "auth", "token": expired_key.raw})
    frames, code = await read_until_close(comm)
    assert code == 4401 and frames[0]["code"] == 401 and "expired" in frames[0]["message"]
    await comm.disconnect()
