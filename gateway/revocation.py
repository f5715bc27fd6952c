"""Control messages between gateway processes, over the channel layer.

Tokens never travel through the channel layer (channels-redis drops messages
over capacity); only rare control events do: a revoked key or a suspended org
closes its open sockets in every process. With the in-memory layer (embedded
default) this reaches the one gateway process, which also serves the admin.
Anything the broadcast misses (a change made from a shell, a lost message) is
caught by the per-request re-check in `gateway.auth.recheck_principal`.
"""
from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

ACCESS_REVOKED = "gateway.access_revoked"  # handled by GatewayConsumer.gateway_access_revoked


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
        async_to_sync(layer.group_send)(group, {"type": ACCESS_REVOKED, "reason": reason})
    except Exception:
        log.warning("could not broadcast %r to %s", reason, group, exc_info=True)
