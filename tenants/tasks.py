"""Celery tasks of the tenants app: thin, taking ids, calling tenants/audit.py."""
from __future__ import annotations

from celery import shared_task

from tenants import audit


@shared_task(name="tenants.tasks.verify_audit_chain", acks_late=True)
def verify_audit_chain(verification_id: int) -> dict:
    """Check an org's audit chain (idempotent: a finished check is left as it is)."""
    verification = audit.audit_chain_verify(verification_id)
    return {"status": verification.status, "checked": verification.checked,
            "first_broken_seq": verification.first_broken_seq}


audit.register_task("tenants.tasks.verify_audit_chain", verify_audit_chain)
