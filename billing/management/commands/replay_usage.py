"""``manage.py replay_usage``: write the usage records set aside in the dead-letter file."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, transaction
from django.utils import timezone

from billing import deadletter
from billing.models import UsageRecord
from billing.services import usage_records_write
from billing.usage import UsageDraft

CHUNK = 500


class Command(BaseCommand):
    help = (
        "Write the usage records set aside in DATA_DIR/dead-letter/usage.jsonl (records the database "
        "refused, or still unwritten at a shutdown). Records written, or already in the database, leave the "
        "file; records that still fail stay in it with their new error. Safe to run again: records are keyed "
        "by their request id."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--clean", action="store_true",
            help="Replace text no database can store (NUL, lone surrogates) with U+FFFD before writing.",
        )

    def handle(self, *args, clean: bool = False, **options):
        written = present = failed = unreadable = 0
        try:
            with deadletter.rewriting() as (lines, keep):
                entries = []
                seen = set()
                for line in lines:
                    try:
                        item = json.loads(line)
                        draft = deadletter.draft_from(item)
                    except (ValueError, KeyError, TypeError) as exc:
                        self.stderr.write(f"unreadable line kept: {deadletter.describe(exc)}")
                        keep.append(line)
                        unreadable += 1
                        continue
                    if draft.request_id in seen:  # set aside twice (a shutdown spill while isolating it)
                        continue
                    seen.add(draft.request_id)
                    entries.append((item, deadletter.cleaned(draft) if clean else draft))
                close_old_connections()
                drafts = [draft for _, draft in entries]
                refused: dict = {}
                for start in range(0, len(drafts), CHUNK):
                    chunk = drafts[start:start + CHUNK]
                    already = set(UsageRecord.objects.filter(pk__in=[d.request_id for d in chunk])
                                  .values_list("pk", flat=True))
                    present += len(already)
                    refused |= write_isolating([d for d in chunk if d.request_id not in already])
                for item, draft in entries:
                    if draft.request_id in refused:
                        item["error"] = refused[draft.request_id]
                        item["replay_failed_at"] = timezone.now().isoformat()
                        keep.append(deadletter.encode(item))
                        self.stderr.write(f"still failing, kept: {draft.request_id}: {refused[draft.request_id]}")
                failed = len(refused)
                written = len(drafts) - present - failed
        except DatabaseError as exc:
            raise CommandError(f"the database is unavailable, nothing replayed: {deadletter.describe(exc)}") from exc
        self.stdout.write(
            f"usage records replayed from {deadletter.path()}: {written} written, {present} already present, "
            f"{failed} still failing, {unreadable} unreadable ({failed + unreadable} kept in the file)"
        )


def write_isolating(drafts: list[UsageDraft]) -> dict:
    """Write the records, isolating those refused for good by halving: request id ->
    error for each of them. Other database errors are raised (nothing is lost: the
    file is left as it was)."""
    refused: dict = {}
    if not drafts:
        return refused
    try:
        with transaction.atomic():
            usage_records_write(drafts)
    except deadletter.PERMANENT_ERRORS as exc:
        if len(drafts) == 1:
            refused[drafts[0].request_id] = deadletter.describe(exc)
        else:
            half = len(drafts) // 2
            refused |= write_isolating(drafts[:half])
            refused |= write_isolating(drafts[half:])
    return refused
