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


class GatedLayer:
    """An in-process stand-in for the channel layer whose group changes wait until the
    test releases them, one by one in any order: it shows which changes are in flight
    at once, and the memberships they leave behind."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, asyncio.Event]] = []  # (operation, group, release)
        self.memberships: set[str] = set()  # the groups the listener's channel is in

    async def new_channel(self) -> str:
        return "specific.test!control"

    async def receive(self, channel):
        await asyncio.Event().wait()  # no control message in these tests

    async def group_add(self, group, channel):
        await self._change("add", group)
        self.memberships.add(group)

    async def group_discard(self, group, channel):
        await self._change("discard", group)
        self.memberships.discard(group)

    async def _change(self, operation: str, group: str) -> None:
        released = asyncio.Event()
        self.pending.append((operation, group, released))
        await released.wait()

    def release(self, index: int = 0) -> tuple[str, str]:
        operation, group, released = self.pending.pop(index)
        released.set()
        return operation, group


async def until(condition, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


async def settle(layer: GatedLayer, tasks, pick=lambda pending: 0) -> None:
    """Release the layer's changes (`pick` chooses which) until every task is done."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not all(task.done() for task in tasks):
        assert loop.time() < deadline, f"stuck with {[p[:2] for p in layer.pending]}"
        if layer.pending:
            layer.release(pick(layer.pending))
        await asyncio.sleep(0)
    for task in tasks:
        task.result()


async def test_joins_and_leaves_of_different_groups_reach_the_channel_layer_side_by_side():
    """A reconnect storm across many keys: each key's subscription is a Redis round trip,
    and those of different groups do not wait for one another."""
    from gateway.revocation import ControlListener, key_group

    layer = GatedLayer()
    listener = ControlListener(layer)
    groups = [key_group(f"k{i}") for i in range(5)]
    sockets = [object() for _ in groups]
    joins = [asyncio.create_task(listener.join(s, [g])) for s, g in zip(sockets, groups)]
    await until(lambda: len(layer.pending) == len(groups))  # all under way at once
    await settle(layer, joins)
    assert listener.groups() == {g: 1 for g in groups} and layer.memberships == set(groups)

    leaves = [asyncio.create_task(listener.leave(s, [g])) for s, g in zip(sockets, groups)]
    await until(lambda: len(layer.pending) == len(groups))
    await settle(layer, leaves)
    assert listener.groups() == {} and layer.memberships == set()
    assert len(listener._turns) == 0  # no lock is kept for a group nobody is changing
    await listener.stop()


async def test_a_join_racing_the_last_leave_of_its_group_ends_subscribed():
    """The last socket of a key closes and another opens while the unsubscription is on
    its way: the new one's subscription comes after it, not before (which the late
    unsubscription would undo, leaving the socket deaf to revocations)."""
    from gateway.revocation import ControlListener, key_group

    layer = GatedLayer()
    listener = ControlListener(layer)
    group = key_group("k")
    first, second = object(), object()
    joining = asyncio.create_task(listener.join(first, [group]))
    await settle(layer, [joining])
    leaving = asyncio.create_task(listener.leave(first, [group]))
    await until(lambda: [p[:2] for p in layer.pending] == [("discard", group)])
    joining = asyncio.create_task(listener.join(second, [group]))
    for _ in range(20):  # let the join go as far as it can before anything is released
        await asyncio.sleep(0)
    # The latest change first: an add issued alongside the discard would be undone by it.
    await settle(layer, [leaving, joining], pick=lambda pending: -1)
    assert listener.groups() == {group: 1} and layer.memberships == {group}

    leaving = asyncio.create_task(listener.leave(second, [group]))
    await settle(layer, [leaving])
    assert listener.groups() == {} and layer.memberships == set() and len(listener._turns) == 0
    await listener.stop()


async def test_joins_and_leaves_racing_in_any_order_leave_the_layer_as_the_listener_sees_it():
    """Sockets of two keys of one org open and close in random order, the channel layer
    finishing their changes in random order: at the end, the listener is in exactly the
    groups that have sockets, and the channel layer agrees."""
    import random

    from gateway.revocation import ControlListener, key_group, org_group

    rng = random.Random(14)
    layer = GatedLayer()
    listener = ControlListener(layer)
    org, keys = org_group("o"), [key_group("a"), key_group("b")]
    sockets = [(object(), [keys[i % 2], org]) for i in range(6)]
    open_sockets: set[int] = set()

    async def live(index: int, closes: bool) -> None:
        socket, groups = sockets[index]
        if index not in open_sockets:
            await listener.join(socket, groups)
        if closes:
            await listener.leave(socket, groups)

    for _ in range(40):
        plan = {i: rng.random() < 0.5 for i in rng.sample(range(len(sockets)), 4)}
        tasks = [asyncio.create_task(live(i, closes)) for i, closes in plan.items()]
        await settle(layer, tasks, pick=lambda pending: rng.randrange(len(pending)))
        open_sockets = (open_sockets | set(plan)) - {i for i, closes in plan.items() if closes}
        expected: dict[str, int] = {}
        for i in open_sockets:
            for group in sockets[i][1]:
                expected[group] = expected.get(group, 0) + 1
        assert listener.groups() == expected
        assert layer.memberships == set(expected)
        assert len(listener._turns) == 0
    await listener.stop()


async def test_renewing_the_memberships_drops_a_group_whose_last_leave_was_cancelled():
    """A socket's leave cancelled while it waited for its group's turn (here, behind the
    renewal) leaves the group subscribed without members; the next renewal unsubscribes it
    instead of renewing it."""
    from gateway.revocation import ControlListener, key_group

    layer = GatedLayer()
    listener = ControlListener(layer)
    group = key_group("k")
    socket = object()
    await settle(layer, [asyncio.create_task(listener.join(socket, [group]))])
    renewing = asyncio.create_task(listener._renew())
    await until(lambda: [p[:2] for p in layer.pending] == [("add", group)])
    leaving = asyncio.create_task(listener.leave(socket, [group]))
    await until(lambda: listener.groups() == {group: 0})  # out of the group, waiting for its turn
    leaving.cancel()
    await settle(layer, [renewing])
    assert listener.groups() == {group: 0} and layer.memberships == {group}
    await settle(layer, [asyncio.create_task(listener._renew())])
    assert listener.groups() == {} and layer.memberships == set() and len(listener._turns) == 0
    await listener.stop()
