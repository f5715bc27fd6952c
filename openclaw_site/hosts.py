"""A plain 400 for a request whose Host header is not one the gateway serves.

Django answers a disallowed Host (a SuspiciousOperation) with its technical
error page when DEBUG is on — settings, paths and the request, to whoever sent
the header. This middleware runs first and refuses such requests itself, with a
short text body, whatever DEBUG says; the refusal is still logged on Django's
`django.security.DisallowedHost` logger. WebSocket connections do not pass
through Django's middleware and are not affected.

It also refuses, with a plain 400 naming the place, a request carrying text that
cannot be stored in a header, the query string or a form field — the same rule as
WebSocket frames (`gateway.protocol.unstorable_text`: NUL, lone surrogates). Parts
of a request are stored (django-axes keeps the username typed and the user agent
of a failed login; the audit log the same), and PostgreSQL refuses NUL: such a
request would otherwise end in a server error.
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
    problem = _unstorable_text(request)
    if problem:
        return HttpResponseBadRequest(f"400 Bad Request: {problem}\n", content_type="text/plain; charset=utf-8")
    return None


def _unstorable_text(request) -> str | None:
    from gateway.protocol import unstorable_text  # the one rule for text from clients

    headers = {f"header {name}": value for name, value in request.headers.items()}
    problem = unstorable_text(headers) or unstorable_text({f"query {k}": v for k, v in request.GET.lists()})
    if problem is None and request.method == "POST":
        problem = unstorable_text({f"form field {k}": v for k, v in request.POST.lists()})
    return problem


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
