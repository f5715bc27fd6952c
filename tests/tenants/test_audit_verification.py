"""Background checks of an org's audit chain (tenants/audit.py `audit_verification_start`,
`audit_chain_verify`), run through the Celery task (tenants/tasks.py) eagerly."""
from __future__ import annotations

import pytest

from tenants import audit, tasks
from tenants.audit import audit_chain_verify, audit_verification_start, record_event
from tenants.models import AuditEvent, AuditVerification
from tests.support.personas import make_user

pytestmark = pytest.mark.django_db


def _events(org, count):
    return [record_event(org=org, actor_type="system", action="thing.done", data={"n": i}) for i in range(count)]


def _start(org, **kwargs):
    user = make_user("checker")
    return audit_verification_start(org=org, user=user, actor=user.username)


def _run(verification, **kwargs):
    return audit_chain_verify(verification.pk, **kwargs)


def test_an_intact_chain_is_reported_ok_after_several_batches(org):
    _events(org, 23)
    verification = _run(_start(org), batch=5)
    assert verification.status == "ok"
    assert verification.checked == verification.total == 24  # org_create's event too
    assert verification.first_broken_seq is None and verification.finished_at is not None


def test_an_edited_event_is_reported_at_its_seq(org):
    events = _events(org, 30)
    AuditEvent.objects.filter(pk=events[16].pk).update(data={"n": "forged"})
    verification = _run(_start(org), batch=4)
    assert verification.status == "broken"
    assert verification.first_broken_seq == events[16].seq
    assert verification.checked == events[16].seq - 1
    assert "changed" in verification.message


def test_a_deleted_event_is_reported_at_its_seq(org):
    events = _events(org, 12)
    AuditEvent.objects.filter(pk=events[5].pk)._raw_delete(AuditEvent.objects.db)
    verification = _run(_start(org), batch=4)
    assert verification.status == "broken"
    assert verification.first_broken_seq == events[5].seq
    assert "missing" in verification.message


def test_a_relinked_event_is_reported(org):
    events = _events(org, 6)
    AuditEvent.objects.filter(pk=events[3].pk).update(prev_hash="f" * 64)
    verification = _run(_start(org))
    assert (verification.status, verification.first_broken_seq) == ("broken", events[3].seq)


def test_another_orgs_tampering_does_not_break_this_chain(org, other_org):
    theirs = _events(other_org, 3)
    AuditEvent.objects.filter(pk=theirs[1].pk).update(data={"n": "forged"})
    _events(org, 3)
    assert _run(_start(org)).status == "ok"


def test_progress_is_saved_after_each_batch_and_a_resumed_check_continues(org, monkeypatch):
    _events(org, 20)
    verification = _start(org)
    seen = []
    real_filter = AuditEvent.objects.filter

    def failing_after_two_batches(*args, **kwargs):
        seen.append(kwargs)
        if len(seen) == 3:
            raise ConnectionError("database went away")
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(AuditEvent.objects, "filter", failing_after_two_batches)
    with pytest.raises(ConnectionError):
        _run(verification, batch=5)
    monkeypatch.undo()
    stopped = AuditVerification.objects.get(pk=verification.pk)
    assert (stopped.status, stopped.checked) == ("failed", 10)
    assert "database went away" in stopped.message
    # A failed check is final; a running one resumes from its saved progress.
    AuditVerification.objects.filter(pk=verification.pk).update(status="running", finished_at=None)
    resumed = _run(verification, batch=5)
    assert (resumed.status, resumed.checked) == ("ok", 21)


def test_the_task_is_idempotent(org):
    _events(org, 4)
    verification = _start(org)
    first = tasks.verify_audit_chain.apply(args=[verification.pk]).get()
    finished_at = AuditVerification.objects.get(pk=verification.pk).finished_at
    second = tasks.verify_audit_chain.apply(args=[verification.pk]).get()
    assert first == second == {"status": "ok", "checked": 5, "first_broken_seq": None}
    assert AuditVerification.objects.get(pk=verification.pk).finished_at == finished_at


def test_starting_a_check_is_audited_and_queues_the_task_on_commit(org, monkeypatch,
                                                                   django_capture_on_commit_callbacks):
    queued = []
    monkeypatch.setattr(tasks.verify_audit_chain, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        verification = _start(org)
    assert queued == []  # not before the commit
    for callback in callbacks:
        callback()
    assert queued == [verification.pk]
    event = AuditEvent.objects.get(action="audit.verify_started")
    assert (event.actor, event.target_type, event.target_id) == ("checker", "audit_verification",
                                                                 str(verification.public_id))
    assert event.data == {"events": 1}


def test_the_task_is_registered_by_name_in_every_process():
    from celery import current_app

    assert "tenants.tasks.verify_audit_chain" in current_app.tasks
    assert audit._tasks["tenants.tasks.verify_audit_chain"] is tasks.verify_audit_chain
