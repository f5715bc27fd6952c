from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        # Tenants announce revoked keys and suspended orgs through a hook (they sit
        # below the gateway and never import it): close those sockets everywhere.
        from gateway.revocation import close_revoked_sockets
        from tenants import hooks

        hooks.on_access_revoked("gateway.close_revoked_sockets", close_revoked_sockets)
