from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Model catalogue"

    def ready(self) -> None:
        # The API key form (tenants, below the catalogue) lists the names an org can
        # request through this hook.
        from catalog.names import resolvable_names
        from tenants import hooks

        hooks.on_resolvable_names("catalog.names", resolvable_names)
