"""ASGI entry point: HTTP goes to Django, /websocket to the gateway consumer."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
django_asgi_app = get_asgi_application()

from openclaw_site import http_connections  # noqa: E402

http_connections.install()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from gateway.auth import BearerKeyMiddleware  # noqa: E402
from gateway.consumers import GatewayConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # No AllowedHostsOriginValidator here: an origin check rejects before
        # accept(), which daphne turns into HTTP 403 and the article's client
        # answers by reconnecting forever. Origin rules are per org (4403).
        "websocket": BearerKeyMiddleware(URLRouter([path("websocket", GatewayConsumer.as_asgi())])),
    }
)
