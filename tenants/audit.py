"""Writing and verifying the hash-chained audit log.

Call `record_event` inside the transaction of the change it describes, so the
change and its audit row commit or roll back together.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from tenants.models import AuditEvent, AuditVerification, Organization

log = logging.getLogger(__name__)

GENESIS = "0" * 64
PLATFORM_CHAIN = "platform"


def _chain_name(org: Organization | None) -> str:
    return str(org.public_id) if org is not None else PLATFORM_CHAIN


def _event_hash(event: AuditEvent) -> str:
    body = {
        "chain": event.chain,
        "seq": event.seq,
        "actor_type": event.actor_type,
        "actor": event.actor,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "data": event.data,
        "created_at": event.created_at.isoformat(),
        "prev_hash": event.prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_event(
    *,
    org: Organization | None,
    actor_type: str,
    actor: str = "",
    action: str,
    target_type: str = "",
    target_id: str = "",
    data: dict | None = None,
) -> AuditEvent:
    chain = _chain_name(org)
    for _attempt in range(5):
        last = AuditEvent.objects.filter(chain=chain).order_by("-seq").values("seq", "hash").first()
        event = AuditEvent(
            org=org,
            chain=chain,
            seq=(last["seq"] + 1) if last else 1,
            prev_hash=last["hash"] if last else GENESIS,
            actor_type=actor_type,
            actor=actor[:200],
            action=action,
            target_type=target_type,
            target_id=str(target_id),
            data=data or {},
            created_at=timezone.now(),
        )
        # JSON round trip so the hash covers exactly what the database returns.
        event.data = json.loads(json.dumps(event.data, default=str))
        event.hash = _event_hash(event)
        try:
            with transaction.atomic():
                event.save()
            return event
        except IntegrityError:
            continue  # another writer took this seq; read the new head and retry
    raise RuntimeError(f"could not append to audit chain {chain}")


def verify_chain(chain: str) -> tuple[bool, int | None]:
    """Return (ok, first bad seq). Detects edited, inserted and deleted rows."""
    prev = GENESIS
    expected_seq = 1
    for event in AuditEvent.objects.filter(chain=chain).order_by("seq").iterator():
        if event.seq != expected_seq or event.prev_hash != prev or _event_hash(event) != event.hash:
            return False, event.seq
        prev = event.hash
        expected_seq += 1
    return True, None


# --- Verifying an org's chain in the background ------------------------------------
# The page (tenants/views/audit.py) starts a check; a Celery task (tenants/tasks.py)
# runs it in batches, saving progress after each, so a chain of millions of events is
# checked in bounded memory, a restarted task resumes where the last one stopped, and
# a task delivered twice finds the work done.
VERIFY_BATCH = 5_000

# The Celery tasks this module queues, registered by tenants/tasks.py when it is
# imported (tenants/apps.py imports it in every process): the import goes one way,
# tasks -> audit.
_tasks: dict[str, Any] = {}


def register_task(name: str, task) -> None:
    _tasks[name] = task


def audit_verification_start(*, org: Organization, user, actor: str) -> AuditVerification:
    """Record a new check of the org's chain (up to its current head) and queue it
    once this transaction commits. The start is itself audited."""
    with transaction.atomic():
        head = AuditEvent.objects.filter(chain=_chain_name(org)).aggregate(head=Max("seq"))["head"] or 0
        verification = AuditVerification.objects.create(org=org, started_by=user, total=head)
        record_event(org=org, actor_type=AuditEvent.ActorType.USER, actor=actor, action="audit.verify_started",
                     target_type="audit_verification", target_id=str(verification.public_id),
                     data={"events": head})
        verification_id = verification.pk
        transaction.on_commit(lambda: _tasks["tenants.tasks.verify_audit_chain"].delay(verification_id))
    return verification


def audit_chain_verify(verification_id: int, *, batch: int = VERIFY_BATCH) -> AuditVerification:
    """Check the events of a verification's chain from where it last stopped.

    Each event must have the next seq, link to the previous event's hash and hash to
    its own stored hash; the first that does not is reported (`first_broken_seq`,
    with a missing event reported at its own seq). Idempotent: a finished check is
    left as it is."""
    verification = AuditVerification.objects.select_related("org").get(pk=verification_id)
    if verification.status != AuditVerification.Status.RUNNING:
        return verification
    chain = _chain_name(verification.org)
    expected = verification.checked + 1
    prev = verification.last_hash or GENESIS
    try:
        while expected <= verification.total:
            last_of_batch = min(expected + batch - 1, verification.total)
            events = AuditEvent.objects.filter(chain=chain, seq__gte=expected, seq__lte=last_of_batch).order_by("seq")
            for event in events:
                problem = _link_problem(event, expected, prev)
                if problem:
                    verification.checked, verification.last_hash = expected - 1, prev
                    return _finish(verification, AuditVerification.Status.BROKEN, message=problem,
                                   broken_seq=min(event.seq, expected))
                prev = event.hash
                expected += 1
            if expected <= last_of_batch:  # the batch ended early: its last events are gone
                verification.checked, verification.last_hash = expected - 1, prev
                return _finish(verification, AuditVerification.Status.BROKEN, broken_seq=expected,
                               message=f"event {expected} is missing")
            verification.checked = expected - 1
            verification.last_hash = prev
            verification.save(update_fields=["checked", "last_hash"])
    except Exception as exc:  # noqa: BLE001 — reported on the page, then re-raised for the worker's log
        log.exception("audit chain check %s failed", verification.public_id)
        _finish(verification, AuditVerification.Status.FAILED, message=f"the check stopped: {exc}"[:1000])
        raise
    return _finish(verification, AuditVerification.Status.OK,
                   message=f"all {verification.checked} events link up and match their hashes")


def _link_problem(event: AuditEvent, expected: int, prev: str) -> str:
    if event.seq != expected:
        return f"event {expected} is missing"
    if event.prev_hash != prev:
        return f"event {event.seq} does not link to the event before it"
    if _event_hash(event) != event.hash:
        return f"event {event.seq} was changed after it was written (its hash does not match)"
    return ""


def _finish(verification: AuditVerification, status: str, *, message: str, broken_seq: int | None = None):
    verification.status = status
    verification.message = message
    verification.first_broken_seq = broken_seq
    verification.finished_at = timezone.now()
    verification.save(update_fields=["status", "message", "first_broken_seq", "finished_at", "checked", "last_hash"])
    return verification
