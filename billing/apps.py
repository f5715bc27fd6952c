from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"

    def ready(self) -> None:
        # Register the Celery tasks in every process, not only in a worker (Celery's
        # autodiscovery runs when a worker starts): the gateway queues them by name
        # (billing.notifications.queue_task).
        from billing import tasks  # noqa: F401
