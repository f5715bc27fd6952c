"""Authenticating a WebSocket: the `auth` frame, or a Bearer header on the upgrade.

The header path runs in ASGI middleware that only records its result in the
scope; the consumer accepts first and then reports a failure (error frame,
close 4401), because a rejection before accept() reaches the client as an HTTP
403 that browsers cannot read and the article's client retries forever.
"""
from __future__ import annotations

from channels.db import database_sync_to_async

from tenants.access import AuthenticationFailed, KeyPrincipal, authenticate_api_key

SCOPE_PRINCIPAL = "gateway_principal"
SCOPE_AUTH_FAILURE = "gateway_auth_failure"


@database_sync_to_async
def authenticate(raw_token: object, *, source: str) -> KeyPrincipal:
    return authenticate_api_key(raw_token, source=source)


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
        scope = dict(scope)
        token = _bearer_token(scope)
        if token is not None:
            try:
                scope[SCOPE_PRINCIPAL] = await authenticate(token, source="websocket-header")
            except AuthenticationFailed as exc:
                scope[SCOPE_AUTH_FAILURE] = exc.reason
        return await self.app(scope, receive, send)
