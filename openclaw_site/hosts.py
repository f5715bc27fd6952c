"""A plain 400 for a request whose Host header is not one the gateway serves.

Django answers a disallowed Host (a SuspiciousOperation) with its technical
error page when DEBUG is on — settings, paths and the request, to whoever sent
the header. This middleware runs first and refuses such requests itself, with a
short text body, whatever DEBUG says; the refusal is still logged on Django's
`django.security.DisallowedHost` logger. WebSocket connections do not pass
through Django's middleware and are not affected.
"""
from __future__ import annotations

import logging

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import DisallowedHost
from django.http import HttpResponseBadRequest
from django.utils.decorators import sync_and_async_middleware

security_log = logging.getLogger("django.security.DisallowedHost")

_BODY = "400 Bad Request: this gateway is not served under that host name.\n"


def _refusal(request) -> HttpResponseBadRequest | None:
    try:
        request.get_host()
    except DisallowedHost as error:
        security_log.warning("refused a request: %s", error)
        return HttpResponseBadRequest(_BODY, content_type="text/plain; charset=utf-8")
    return None


@sync_and_async_middleware
def refuse_bad_hosts(get_response):
    if iscoroutinefunction(get_response):
        async def middleware(request):
            refusal = _refusal(request)
            return refusal if refusal is not None else await get_response(request)
    else:
        def middleware(request):
            refusal = _refusal(request)
            return refusal if refusal is not None else get_response(request)
    return middleware
