"""Revoking a key or suspending an org (gateway/revocation.py) takes effect on open
sockets, however the change was made; an expired key is refused at authentication."""
import asyncio
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


async def test_a_process_subscribes_once_per_group_however_many_sockets_and_each_socket_hears_a_revocation(
        issued_key, deployment):
    """Sockets have no channel of their own: the process's one listener is a member of the
    key's and the org's group while any of its sockets is, and passes a broadcast on to each."""
    from gateway.revocation import control_listener, key_group, org_group

    comms = [await authed(issued_key) for _ in range(3)]
    listener = control_listener()
    groups = {key_group(issued_key.api_key.public_id): 3, org_group(issued_key.api_key.org.public_id): 3}
    assert listener.groups() == groups
    assert all(not hasattr(c, "channel_name") for c in listener._members[next(iter(groups))])
    await sync_to_async(api_key_revoke)(api_key=issued_key.api_key)
    for comm in comms:
        frames, code = await read_until_close(comm)
        assert code == 4401 and "revoked" in frames[-1]["message"]
        await comm.disconnect()
    assert listener.groups() == {}  # the last socket out unsubscribed the process


async def test_the_last_socket_of_a_key_leaving_unsubscribes_and_the_next_one_subscribes_again(issued_key):
    from channels.layers import get_channel_layer

    from gateway.revocation import control_listener, key_group

    layer = get_channel_layer()
    group = key_group(issued_key.api_key.public_id)
    first, second = await authed(issued_key), await authed(issued_key)
    await first.disconnect()
    assert control_listener().groups()[group] == 1  # still subscribed for the second
    await second.disconnect()
    assert group not in control_listener().groups()
    added = []
    real_group_add = layer.group_add

    async def counting_group_add(name, channel):
        added.append(name)
        await real_group_add(name, channel)

    layer.group_add = counting_group_add
    try:
        third, fourth = await authed(issued_key), await authed(issued_key)
    finally:
        del layer.group_add
    assert added.count(group) == 1  # one subscription for both
    await sync_to_async(api_key_revoke)(api_key=issued_key.api_key)
    for comm in (third, fourth):
        _frames, code = await read_until_close(comm)
        assert code == 4401
        await comm.disconnect()


async def test_a_control_message_without_a_group_is_left_to_the_background_recheck(issued_key, caplog):
    from channels.layers import get_channel_layer

    from gateway.revocation import ACCESS_REVOKED, key_group

    comm = await authed(issued_key)
    # As a process of an earlier version sends it: no "group" in the message.
    await get_channel_layer().group_send(key_group(issued_key.api_key.public_id),
                                         {"type": ACCESS_REVOKED, "reason": "key revoked"})
    for _ in range(100):  # through Redis the message arrives a moment later
        if "names no group" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "names no group" in caplog.text
    await send_frame(comm, {"type": "ping"})
    assert (await next_frame(comm))["type"] == "pong"  # still open
    await comm.disconnect()
