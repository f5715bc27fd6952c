"""Writing and verifying the hash-chained audit log.

Call `record_event` inside the transaction of the change it describes, so the
change and its audit row commit or roll back together.
"""
from __future__ import annotations

import hashlib
import json

from django.db import IntegrityError, transaction
from django.utils import timezone

from tenants.models import AuditEvent, Organization

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
