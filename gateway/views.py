"""The playground page (templates/gateway/playground.html) and the endpoint its script
gets a short-lived key from (static/openclaw/playground.js)."""
from __future__ import annotations

from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache

from gateway.playground import playground_names
from tenants.access import EVERYONE, org_view
from tenants.playground_keys import key_lifetime, playground_key_for


@org_view(get=EVERYONE)
def playground(request):
    return render(request, "gateway/playground.html", {
        "section": "playground", "names": playground_names(request.org),
        "key_minutes": int(key_lifetime().total_seconds() // 60),
    })


@never_cache
@org_view(post=EVERYONE)
def playground_key(request):
    """{key, expires_at, websocket_url} for the page's script: the member's playground
    key for this org (POST with the CSRF token: it hands out a credential)."""
    raw, expires_at = playground_key_for(request.user, request.org, session=request.session)
    scheme = "wss" if request.is_secure() else "ws"
    return JsonResponse({
        "key": raw,
        "expires_at": expires_at.isoformat().replace("+00:00", "Z"),
        "websocket_url": f"{scheme}://{request.get_host()}/websocket",
    })
