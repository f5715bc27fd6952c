"""Celery tasks of the tenants app: thin and idempotent."""
from __future__ import annotations

from celery import shared_task

from tenants.playground_keys import playground_keys_purge


@shared_task(name="tenants.tasks.purge_playground_keys")
def purge_playground_keys() -> dict:
    """Delete (or, with usage, revoke) playground keys expired for more than a day."""
    return playground_keys_purge()
