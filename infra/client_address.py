"""The address a request really comes from, for throttling and auditing.

The TCP peer is the client unless it is one of our own proxies
(`OPENCLAW_TRUSTED_PROXIES`, CIDRs). Only then is `X-Forwarded-For` read, from
its right end: each trusted proxy appends the address it received from, so the
rightmost entry that is not a trusted proxy is the first hop we did not run —
anything to the left of it was written by the client and may be forged.

IPv6 clients are grouped by their /64: one host usually gets a whole /64, so
counting single addresses would let it rotate through 2**64 of them.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings

IPV6_GROUP_PREFIX = 64


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _trusted(address, networks) -> bool:
    return any(address in network for network in networks)


def _parse(text: str):
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def resolve(peer: str | None, forwarded_for: str | None) -> str | None:
    """The client's address (normalised text), or None when nothing usable is known."""
    address = _parse(peer) if peer else None
    if address is None:
        return None
    networks = _networks(tuple(getattr(settings, "TRUSTED_PROXIES", ()) or ()))
    if networks and forwarded_for and _trusted(address, networks):
        for hop in reversed(forwarded_for.split(",")):
            hop_address = _parse(hop)
            if hop_address is None:
                break  # a garbled entry: stop at the last proxy we trust
            address = hop_address
            if not _trusted(hop_address, networks):
                break
    return str(address)


def throttle_subject(address: str | None) -> str | None:
    """What failures are counted against: the address, or its /64 for IPv6."""
    if address is None:
        return None
    parsed = ipaddress.ip_address(address)
    if parsed.version == 4:
        return str(parsed)
    if parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/{IPV6_GROUP_PREFIX}", strict=False))


def from_scope(scope) -> str | None:
    """The client address of an ASGI connection (`scope["client"]`, then the trusted proxies' header)."""
    client = scope.get("client")
    peer = client[0] if client else None
    forwarded = None
    for name, value in scope.get("headers") or ():
        if name == b"x-forwarded-for":
            forwarded = value.decode("latin-1") if forwarded is None else f"{forwarded},{value.decode('latin-1')}"
    return resolve(peer, forwarded)


def from_request(request) -> str | None:
    """The same for a Django request (django-axes' AXES_CLIENT_IP_CALLABLE and the admin login audit)."""
    return resolve(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR"))
