"""The usage draft (billing/usage.py): what a request that ends without saying more is
recorded as, and its lease kept out of the record."""
import uuid
from decimal import Decimal

from billing.models import UsageRecord
from billing.usage import UsageDraft


def a_draft(**fields) -> UsageDraft:
    return UsageDraft(request_id=uuid.uuid4(), client_request_id="r1", org_id=1, api_key_id=2,
                      requested_model="mock-fast", **fields)


def test_a_draft_nothing_else_was_said_of_is_an_internal_error_with_nothing_billed():
    draft = a_draft()
    assert draft.status == UsageRecord.Status.INTERNAL_ERROR
    assert (draft.prompt_tokens, draft.completion_tokens) == (0, 0)
    assert draft.cost_usd == Decimal("0") and isinstance(draft.cost_usd, Decimal)
    assert draft.prompt_tokens_source == UsageRecord.TokenSource.NONE
    assert draft.started_at is not None and draft.ended_at is None


def test_drafts_do_not_share_their_route():
    first, second = a_draft(), a_draft()
    first.route["tried"] = ["a"]
    assert second.route == {}


def test_the_lease_is_neither_compared_nor_shown():
    lease = object()
    draft = a_draft(lease=lease)
    twin = UsageDraft(**{**draft.__dict__, "lease": None})
    assert draft == twin and "lease" not in repr(draft)


def test_every_column_of_a_draft_is_a_field_of_the_record():
    columns = {f.name for f in UsageRecord._meta.concrete_fields} | {f.attname for f in
                                                                      UsageRecord._meta.concrete_fields}
    assert set(a_draft().__dict__) - {"lease"} <= columns
