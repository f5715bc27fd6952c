"""Control messages between gateway processes, over the channel layer.

Tokens never travel through the channel layer (channels-redis drops messages
over capacity); only rare control events do: a revoked key or a suspended org
closes its open sockets in every process. With the in-memory layer (embedded
default) this reaches the one gateway process, which also serves the admin.
Anything the broadcast misses (a change made from a shell, a lost message) is
caught by the per-request re-check in `gateway.auth.recheck_principal` and by the
background re-check of open keys (gateway/freshness.py).

Each gateway process has one subscriber (`ControlListener`): one channel, one receive
loop, and one membership per group that any of its connections belongs to (a key's
group, an org's group), however many connections that is. Sockets have no channel of
their own: an idle connection costs no receive task, no channel and no membership.
A message names the group it was sent to, and the listener hands it to the
connections of that group in the process (their `dispatch`, as channels would).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from infra.loopbound import PerLoop, spawn, stop_tasks

log = logging.getLogger(__name__)

ACCESS_REVOKED = "gateway.access_revoked"  # handled by GatewayConsumer.gateway_access_revoked
# Group memberships expire in the channel layer (channels-redis: `group_expiry`, 30 days
# in settings; the in-memory layer: 1 day): the listener renews its own this often.
RENEW_MEMBERSHIPS_SECONDS = 6 * 3600


def key_group(key_public_id: str) -> str:
    return f"key.{key_public_id}"


def org_group(org_public_id: str) -> str:
    return f"org.{org_public_id}"


def close_revoked_sockets(kind: str, public_id: str, reason: str) -> None:
    """The hook for `tenants.hooks.access_revoked` (registered in gateway/apps.py)."""
    broadcast_access_revoked(key_group(public_id) if kind == "api_key" else org_group(public_id), reason)


def broadcast_access_revoked(group: str, reason: str) -> None:
    """Tell every socket in `group`, in every process, that its access is gone.

    Called after the database transaction commits; never raises (the per-request
    re-check is the safety net).
    """
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group, {"type": ACCESS_REVOKED, "reason": reason, "group": group})
    except Exception:
        log.warning("could not broadcast %r to %s", reason, group, exc_info=True)


class _Turn:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # changes holding or awaiting the lock


class GroupTurns:
    """One lock per group, so that changes to one group's membership take turns while
    changes to different groups proceed side by side (a reconnect storm across many keys
    does not queue every Redis round trip behind one lock).

    A group's lock exists only while some change to that group holds or awaits it: idle
    groups, and idle sockets, cost nothing here."""

    __slots__ = ("_turns",)

    def __init__(self) -> None:
        self._turns: dict[str, _Turn] = {}

    def __len__(self) -> int:
        return len(self._turns)

    @contextlib.asynccontextmanager
    async def turn(self, group: str):
        turn = self._turns.get(group)
        if turn is None:
            turn = self._turns[group] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[group]


class ControlListener:
    """This process's subscriber to control messages, shared by its connections.

    `join(consumer, groups)` makes the consumer a member of each group: the first member
    in the process subscribes the process's channel to it (awaited, so a broadcast sent
    after `join` returns reaches the consumer); `leave` takes it out, and the last member
    to leave unsubscribes. Subscribing and unsubscribing one group take turns (`GroupTurns`),
    so a group is never left subscribed without members nor joined without a subscription;
    different groups change concurrently.

    A group is in `_members` only while the channel is subscribed to it: it is added
    after the subscription completes, and removed (in the group's turn, once empty)
    before the unsubscription starts. So a consumer may join a group that is in
    `_members` without waiting, even one whose last member is about to leave: that leave
    finds the group no longer empty when its turn comes, and keeps the subscription.
    """

    def __init__(self, layer=None) -> None:
        self._layer = layer if layer is not None else get_channel_layer()
        self._members: dict[str, set] = {}  # group -> this process's consumers in it
        self._turns = GroupTurns()  # subscribing / unsubscribing, per group
        self._opening = asyncio.Lock()  # making the process's channel, once
        self._channel: str | None = None
        self._task: asyncio.Task | None = None

    @property
    def channel(self) -> str | None:
        return self._channel

    def groups(self) -> dict[str, int]:
        """The groups this process is subscribed to, with how many connections each."""
        return {group: len(members) for group, members in self._members.items()}

    def start(self) -> None:
        pass  # the receive loop starts with the first subscription

    async def stop(self) -> None:
        """Stop receiving (the end of the drain: every connection has left by then)."""
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task], timeout=10)

    async def join(self, consumer, groups: list[str]) -> None:
        for group in groups:
            members = self._members.get(group)
            if members is None:
                async with self._turns.turn(group):
                    members = self._members.get(group)
                    if members is None:
                        await self._subscribe(group)
                        members = self._members[group] = set()
            members.add(consumer)

    async def leave(self, consumer, groups: list[str]) -> None:
        """Take the consumer out of each group it is in (the others are skipped)."""
        for group in groups:
            members = self._members.get(group)
            if members is None or consumer not in members:
                continue
            members.discard(consumer)
            if members:
                continue
            async with self._turns.turn(group):
                if self._members.get(group) is members and not members:
                    del self._members[group]
                    await self._layer.group_discard(group, self._channel)

    async def _subscribe(self, group: str) -> None:
        if self._channel is None:
            async with self._opening:  # concurrent first subscriptions share one channel
                if self._channel is None:
                    self._channel = await self._layer.new_channel()
        await self._layer.group_add(group, self._channel)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="control-messages")

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        receiving: asyncio.Future | None = None
        renew_at = loop.time() + RENEW_MEMBERSHIPS_SECONDS
        try:
            while True:
                if receiving is None:
                    receiving = asyncio.ensure_future(self._layer.receive(self._channel))
                done, _ = await asyncio.wait({receiving}, timeout=max(0.0, renew_at - loop.time()))
                if loop.time() >= renew_at:
                    renew_at = loop.time() + RENEW_MEMBERSHIPS_SECONDS
                    await self._renew()
                if not done:
                    continue
                finished, receiving = receiving, None
                try:
                    message = finished.result()
                except Exception:
                    log.warning("control messages: the channel layer failed; retrying in a second", exc_info=True)
                    await asyncio.sleep(1)
                    continue
                self._deliver(message)
        finally:
            if receiving is not None:
                receiving.cancel()

    def _deliver(self, message: dict) -> None:
        group = message.get("group")
        if group is None:
            # From a process of an earlier version. The background re-check of open keys
            # (gateway/freshness.py) applies the change within about a second anyway.
            log.warning("control message %r names no group; left to the background re-check", message.get("type"))
            return
        for consumer in list(self._members.get(group, ())):
            spawn(consumer.dispatch(message))  # each connection handles it as its own message

    async def _renew(self) -> None:
        for group in list(self._members):
            async with self._turns.turn(group):
                members = self._members.get(group)
                if members is None:
                    continue  # left meanwhile: renewing would subscribe it again, without members
                try:
                    if members:
                        await self._layer.group_add(group, self._channel)
                    else:  # its last member's leave was cancelled before its turn came
                        del self._members[group]
                        await self._layer.group_discard(group, self._channel)
                except Exception:
                    log.warning("control messages: could not renew the membership of %s", group, exc_info=True)


_listener = PerLoop(ControlListener)


def control_listener() -> ControlListener:
    """The running loop's listener (channel layers are bound to a loop)."""
    return _listener.get()


def reset() -> None:
    """Forget the listener (gateway.runtime.reset)."""
    _listener.forget()
