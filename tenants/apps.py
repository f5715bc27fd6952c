from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenants"

    def ready(self) -> None:
        from tenants import login_audit

        login_audit.connect()  # admin logins into the platform audit chain
        # Register the Celery tasks in every process, not only in a worker: the
        # dashboard queues them by name (tenants.audit.register_task).
        from tenants import tasks  # noqa: F401
