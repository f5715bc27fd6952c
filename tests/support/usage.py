"""Usage records in tests: drafts of a key's requests, the dead-letter file, and
`manage.py replay_usage` run as an operator would (billing/recorder.py,
billing/deadletter.py, billing/management/commands/replay_usage.py)."""
from __future__ import annotations

import asyncio
import io
import json
import uuid
from decimal import Decimal

import pytest

from billing import deadletter
from billing.usage import UsageDraft


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    """A data directory of the test's own, so its dead-letter file starts absent
    (autouse in the modules that import it)."""
    settings.DATA_DIR = tmp_path / "var"
    settings.DATA_DIR.mkdir()
    return settings.DATA_DIR


def draft_for(issued_key, **fields) -> UsageDraft:
    """A completed request's usage draft for the issued key; `fields` override."""
    values = dict(request_id=uuid.uuid4(), client_request_id="good", org_id=issued_key.api_key.org_id,
                  api_key_id=issued_key.api_key.pk, requested_model="mock-fast", status="completed",
                  finish_reason="stop", prompt_tokens=10, completion_tokens=5, cost_usd=Decimal("0.000075"),
                  route={"route": "r", "tried": ["mock-fast"]})
    return UsageDraft(**(values | fields))


def dead_letters() -> list[dict]:
    """The entries of the dead-letter file, in order ([] when there is none)."""
    file = deadletter.path()
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


async def in_thread(fn, *args):
    """Run database work on a thread of its own, closing its connection after (the
    test database is dropped at the end of the run)."""
    from django.db import connections

    def run():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


async def run_replay_usage(*args) -> str:
    """`manage.py replay_usage *args`; what it printed."""
    from django.core.management import call_command

    def run():
        out = io.StringIO()
        call_command("replay_usage", *args, stdout=out, stderr=io.StringIO())
        return out.getvalue()

    return await in_thread(run)
