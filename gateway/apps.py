from django.apps import AppConfig


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        # Tenants announce revoked keys and suspended orgs through a signal (they sit
        # below the gateway and never import it): close those sockets everywhere.
        from gateway.control import on_access_revoked
        from tenants.signals import access_revoked

        access_revoked.connect(on_access_revoked, dispatch_uid="gateway.close_revoked_sockets")
