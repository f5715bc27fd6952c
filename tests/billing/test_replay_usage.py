"""`manage.py replay_usage` (billing/management/commands/replay_usage.py): writes the
usage records set aside in the dead-letter file once they can be — with `--clean`
making their text storable — keeps what still fails or cannot be read, recognises a
record already written, and leaves the file untouched when the database is down.
Records are set aside by the usage recorder, as in production (tests/billing/test_recorder.py)."""
import pytest
from django.db import OperationalError

from billing import deadletter
from billing.models import UsageRecord
from billing.recorder import usage_recorder
from tests.support.usage import data_dir, dead_letters, draft_for, run_replay_usage  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_replay_writes_set_aside_records_once_they_can_be(issued_key, org):
    surrogate = draft_for(issued_key, client_request_id="s", end_user="bob\ud800", route={"user": "\udfff"})
    orphan = draft_for(issued_key, client_request_id="o", org_id=org.pk + 10_000)
    good = draft_for(issued_key)
    for draft in (surrogate, good, orphan):
        usage_recorder.submit(draft)
    assert await usage_recorder.flush(timeout=20)
    assert {e["request_id"] for e in dead_letters()} == {str(surrogate.request_id), str(orphan.request_id)}

    out = await run_replay_usage()
    assert "0 written, 0 already present, 2 still failing, 0 unreadable" in out
    assert len(dead_letters()) == 2

    # --clean makes the text storable; the orphan still cannot be written and stays.
    out = await run_replay_usage("--clean")
    assert "1 written, 0 already present, 1 still failing" in out
    record = await UsageRecord.objects.aget(pk=surrogate.request_id)
    assert (record.end_user, record.route) == ("bob\ufffd", {"user": "\ufffd"})
    [kept] = dead_letters()
    assert kept["request_id"] == str(orphan.request_id) and "IntegrityError" in kept["error"]

    # The operator fixes the record by hand (the file is JSON lines); a stale copy of
    # an already written record (set aside twice) is recognised, not written again.
    kept["record"]["org_id"] = org.pk
    stale = deadletter.entry(surrogate, reason="shutdown", error="x")
    deadletter.path().write_text(deadletter.encode(kept) + "\n" + deadletter.encode(stale) + "\n")
    out = await run_replay_usage()
    assert "1 written, 1 already present, 0 still failing" in out
    assert not deadletter.path().exists()
    assert await UsageRecord.objects.acount() == 3
    assert (await UsageRecord.objects.aget(pk=surrogate.request_id)).end_user == "bob\ufffd"  # not overwritten
    assert "0 written, 0 already present, 0 still failing" in await run_replay_usage()


async def test_replay_keeps_an_unreadable_line_and_leaves_the_file_when_the_database_is_down(issued_key, monkeypatch):
    orphan = draft_for(issued_key, org_id=issued_key.api_key.org_id + 10_000)
    deadletter.append([deadletter.entry(orphan, reason="permanent_error", error="e")])
    with deadletter.path().open("a") as file:
        file.write("{not json\n")
    before = deadletter.path().read_text()

    from billing.management.commands import replay_usage

    def down(drafts):
        raise OperationalError("connection refused")

    monkeypatch.setattr(replay_usage, "write_isolating", down)
    with pytest.raises(Exception, match="database is unavailable"):
        await run_replay_usage()
    assert deadletter.path().read_text() == before
    monkeypatch.undo()
    out = await run_replay_usage()
    assert "0 written, 0 already present, 1 still failing, 1 unreadable (2 kept in the file)" in out
    assert "{not json" in deadletter.path().read_text()
