"""Authenticating a WebSocket: the `auth` frame, or a Bearer header on the upgrade.

The header path runs in ASGI middleware that only records its result in the
scope; the consumer accepts first and then reports a failure (error frame,
close 4401), because a rejection before accept() reaches the client as an HTTP
403 that browsers cannot read and the article's client retries forever.
"""
from __future__ import annotations

import time

from channels.db import database_sync_to_async

from gateway import auth_throttle
from gateway import freshness
from gateway.auth_throttle import AuthThrottled
from infra import client_address
from tenants.access import AuthenticationFailed, KeyPrincipal, api_key_access_problem, authenticate_api_key
from tenants.keys import parse_key

SCOPE_PRINCIPAL = "gateway_principal"
SCOPE_AUTH_FAILURE = "gateway_auth_failure"
SCOPE_AUTH_THROTTLED = "gateway_auth_throttled"


async def authenticate(raw_token: object, *, source: str, scope) -> KeyPrincipal:
    """The principal of a raw key; AuthenticationFailed (401) or AuthThrottled (429).

    Repeated failures from the connection's address or on the key's lookup are
    refused before any database work (gateway/auth_throttle.py).
    """
    address = client_address.from_scope(scope)
    subject = client_address.throttle_subject(address)
    parsed = parse_key(raw_token)
    lookup = parsed.lookup if parsed else None
    await auth_throttle.check(subject=subject, lookup=lookup, digest=parsed.digest if parsed else None,
                              source=source, address=address)
    try:
        return await database_sync_to_async(authenticate_api_key)(raw_token, source=source, address=address)
    except AuthenticationFailed:
        await auth_throttle.failed(subject=subject, lookup=lookup)
        raise


# A key revoked (or an org suspended) by any means, even a raw UPDATE from a
# shell that sends no broadcast, stops being served within this many seconds.
RECHECK_SECONDS = 1.0
_recheck_cache: dict[int, tuple[float, str]] = {}


async def recheck_principal(principal: KeyPrincipal) -> str:
    """Why this connection's key may no longer be used, or "" — cached per key for RECHECK_SECONDS."""
    fresh = freshness.current()
    if fresh is not None:
        problem = fresh.key_problem(principal.key_id)  # this process re-checks its open keys in the background
        if problem is not None:
            return problem
    now = time.monotonic()
    cached = _recheck_cache.get(principal.key_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    problem = await database_sync_to_async(api_key_access_problem)(principal.key_id)
    if len(_recheck_cache) > 10_000:
        _recheck_cache.clear()
    _recheck_cache[principal.key_id] = (now + RECHECK_SECONDS, problem)
    return problem


def reset() -> None:
    """Forget the cached re-checks (gateway.runtime.reset)."""
    _recheck_cache.clear()


def _bearer_token(scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class BearerKeyMiddleware:
    """Put the principal (or the failure reason) of an `Authorization: Bearer` header into the scope."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        token = _bearer_token(scope)
        if token is not None:
            scope = dict(scope)  # a copy only to add to (every socket keeps its scope while open)
            try:
                scope[SCOPE_PRINCIPAL] = await authenticate(token, source="websocket-header", scope=scope)
            except AuthenticationFailed as exc:
                scope[SCOPE_AUTH_FAILURE] = exc.reason
            except AuthThrottled as exc:
                scope[SCOPE_AUTH_THROTTLED] = exc
        return await self.app(scope, receive, send)
