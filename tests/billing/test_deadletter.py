"""The dead-letter file (billing/deadletter.py) on its own: an entry keeps every column
of a draft exactly, even text no database can store; `cleaned` makes such text storable;
which errors are the record's fault. Records set aside by the recorder and replayed:
tests/billing/test_recorder.py, tests/billing/test_replay_usage.py."""
import json
import stat
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from django.db import DataError, IntegrityError, OperationalError

from billing import deadletter
from billing.usage import UsageDraft
from tests.support.usage import data_dir, dead_letters  # noqa: F401  (autouse fixture)


def a_draft(**fields) -> UsageDraft:
    values = dict(request_id=uuid.uuid4(), client_request_id="r1", org_id=1, api_key_id=2,
                  requested_model="gpt\x00", end_user="bob\ud800", status="completed",
                  started_at=datetime(2031, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc),
                  ended_at=datetime(2031, 5, 1, 12, 0, 1, tzinfo=timezone.utc),
                  prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.000075"),
                  input_price_per_mtok=Decimal("2.50"), output_price_per_mtok=None,
                  route={"route": "r", "tried": ["a\udfff"]}, lease=object())
    return UsageDraft(**(values | fields))


def test_a_set_aside_draft_comes_back_exactly_as_it_was():
    draft = a_draft()
    deadletter.set_aside([draft], reason="permanent_error", error="DataError: NUL")
    [item] = dead_letters()
    assert (item["request_id"], item["reason"], item["error"]) == (str(draft.request_id), "permanent_error",
                                                                    "DataError: NUL")
    back = deadletter.draft_from(item)
    assert back == draft  # every column, Decimal, datetime and the unstorable text included
    assert back.cost_usd == Decimal("0.000075") and isinstance(back.cost_usd, Decimal)
    assert back.lease is None  # the lease is not a column


def test_the_file_is_private_and_appends_keep_what_was_there():
    deadletter.set_aside([a_draft()], reason="shutdown", error="x")
    deadletter.set_aside([a_draft(), a_draft()], reason="shutdown", error="y")
    assert [e["error"] for e in dead_letters()] == ["x", "y", "y"]
    assert stat.S_IMODE(deadletter.path().stat().st_mode) == 0o600


def test_each_line_is_ascii_json_even_with_nul_and_lone_surrogates():
    line = deadletter.encode(deadletter.entry(a_draft(), reason="r", error="e"))
    assert line.isascii() and "\n" not in line


def test_cleaned_replaces_only_what_cannot_be_stored():
    draft = deadletter.cleaned(a_draft(client_request_id="fine ✓"))
    assert (draft.requested_model, draft.end_user) == ("gpt\ufffd", "bob\ufffd")
    assert draft.route == {"route": "r", "tried": ["a\ufffd"]}
    assert draft.client_request_id == "fine ✓" and draft.cost_usd == Decimal("0.000075")


def test_a_malformed_cost_is_a_value_error():
    item = json.loads(deadletter.encode(deadletter.entry(a_draft(), reason="r", error="e")))
    item["record"]["cost_usd"] = "lots"  # hand-edited by an operator
    with pytest.raises(ValueError, match="cost_usd"):
        deadletter.draft_from(item)


def test_errors_the_record_causes_are_permanent_the_databases_state_is_not():
    assert deadletter.is_permanent(IntegrityError("fk")) and deadletter.is_permanent(DataError("nul"))
    assert deadletter.is_permanent(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate"))
    assert not deadletter.is_permanent(OperationalError("connection refused"))
