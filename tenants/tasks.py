"""Celery tasks of the tenants app: thin and idempotent, calling the app's services."""
from __future__ import annotations

from celery import shared_task

from tenants import audit
from tenants.playground_keys import playground_keys_purge


@shared_task(name="tenants.tasks.verify_audit_chain", acks_late=True)
def verify_audit_chain(verification_id: int) -> dict:
    """Check an org's audit chain (idempotent: a finished check is left as it is)."""
    verification = audit.audit_chain_verify(verification_id)
    return {"status": verification.status, "checked": verification.checked,
            "first_broken_seq": verification.first_broken_seq}


audit.register_task("tenants.tasks.verify_audit_chain", verify_audit_chain)


@shared_task(name="tenants.tasks.purge_playground_keys")
def purge_playground_keys() -> dict:
    """Delete (or, with usage, revoke) playground keys expired for more than a day."""
    return playground_keys_purge()
