"""Usage records set aside unwritten: the dead-letter file and its replay.

A usage record the database refuses for good (a data or integrity error: text
PostgreSQL cannot store, a number out of range, a row it points to that does not
exist) must not hold up the records behind it, and must not be lost either. It
goes to `DATA_DIR/dead-letter/usage.jsonl` — a plain file, so setting a record
aside works when the database does not — and `manage.py replay_usage` writes it
later. Records still unwritten when a shutdown's flush gives up go there too.

The file holds one JSON object per line: the record's columns, why it was set
aside (`reason`, `error`) and when (`set_aside_at`). JSON escapes NUL and lone
surrogates, so every record can be stored here even when no database could take
it. Writers append one whole write per batch under an exclusive lock on a
separate lock file and fsync before going on; replay holds the same lock while
it rewrites the file (via a temporary file and a rename), so no append is lost.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import uuid
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterator

from django.conf import settings
from django.db import DataError, IntegrityError
from django.utils import timezone

from billing.usage import UsageDraft

# Errors a record causes by what it holds: the same record fails the same way on
# every attempt, so retrying it would only hold up the records behind it. Anything
# else (connection, operational, a lock timeout) is the database's state and is
# retried. ValueError covers drivers refusing a value before sending it (NUL,
# UnicodeEncodeError for a lone surrogate); ArithmeticError a Decimal that does not
# fit its column; TypeError a value of the wrong kind.
PERMANENT_ERRORS = (DataError, IntegrityError, ValueError, TypeError, ArithmeticError)

_DECIMAL_FIELDS = {"input_price_per_mtok", "output_price_per_mtok", "cost_usd"}
_DATETIME_FIELDS = {"started_at", "ended_at"}
_DRAFT_FIELDS = [f.name for f in dataclasses.fields(UsageDraft) if f.name != "lease"]
# Text no database here can store: NUL (PostgreSQL text and jsonb) and lone
# surrogates (not encodable as UTF-8 at all). In a Python str every code point in
# the surrogate range is unpaired: a JSON surrogate pair decodes to one code point.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_permanent(error: BaseException) -> bool:
    return isinstance(error, PERMANENT_ERRORS)


def path() -> Path:
    return Path(settings.DATA_DIR) / "dead-letter" / "usage.jsonl"


def printable(text: str) -> str:
    """Text safe for a log line: NUL and lone surrogates shown as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def describe(error: BaseException) -> str:
    return printable(f"{type(error).__name__}: {error}")


# --- Encoding ---------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)  # something a draft should never hold: keep what it was


def entry(draft: UsageDraft, *, reason: str, error: str) -> dict[str, Any]:
    return {
        "request_id": str(draft.request_id),
        "reason": reason,
        "error": error,
        "set_aside_at": timezone.now().isoformat(),
        "record": {name: getattr(draft, name) for name in _DRAFT_FIELDS},
    }


def encode(item: dict[str, Any]) -> str:
    # ensure_ascii: NUL and lone surrogates become \u escapes, so the line is
    # always writable, and readable back to the very same text.
    return json.dumps(item, default=_plain, ensure_ascii=True, separators=(",", ":"))


def draft_from(item: dict[str, Any]) -> UsageDraft:
    """The draft a dead-letter entry holds (ValueError/KeyError/TypeError if it is malformed)."""
    fields = dict(item["record"])
    fields = {name: fields[name] for name in _DRAFT_FIELDS if name in fields}
    fields["request_id"] = uuid.UUID(fields["request_id"])
    for name in _DECIMAL_FIELDS & fields.keys():
        if fields[name] is not None:
            try:
                fields[name] = Decimal(fields[name])
            except InvalidOperation as exc:
                raise ValueError(f"{name} is not a decimal: {fields[name]!r}") from exc
    for name in _DATETIME_FIELDS & fields.keys():
        if fields[name] is not None:
            fields[name] = datetime.fromisoformat(fields[name])
    return UsageDraft(**fields)


def clean(value: Any) -> Any:
    """Text made storable: NUL and lone surrogates replaced by U+FFFD (the
    replacement character), in every string field and inside the route's JSON."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [clean(v) for v in value]
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value


def cleaned(draft: UsageDraft) -> UsageDraft:
    return dataclasses.replace(draft, **{name: clean(getattr(draft, name)) for name in _DRAFT_FIELDS
                                         if isinstance(getattr(draft, name), (str, list, dict))})


# --- The file ---------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_synced(file: Path, data: bytes, mode: int) -> None:
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | mode, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _locked() -> Iterator[Path]:
    """The dead-letter file's path, with the folder made (0700) and the lock held."""
    file = path()
    folder = file.parent
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _fsync_dir(folder.parent)
    os.chmod(folder, 0o700)  # whatever the umask: the records name tenants and their users
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield file
    finally:
        os.close(fd)  # releases the lock


def append(items: list[dict[str, Any]]) -> Path:
    """Append entries durably: written in one write, fsynced, before returning."""
    data = "".join(encode(item) + "\n" for item in items).encode("ascii")
    with _locked() as file:
        created = not file.exists()
        _write_synced(file, data, os.O_APPEND)
        if created:
            _fsync_dir(file.parent)
    return file


def set_aside(drafts: list[UsageDraft], *, reason: str, error: str) -> Path:
    return append([entry(draft, reason=reason, error=error) for draft in drafts])


@contextmanager
def rewriting() -> Iterator[tuple[list[str], list[str]]]:
    """For replay: (lines in the file, lines to keep). On leaving, the file holds
    exactly the lines to keep (removed when none). The lock is held throughout,
    so appends wait; an error inside leaves the file as it was."""
    with _locked() as file:
        lines = file.read_text("utf-8").splitlines() if file.exists() else []
        keep: list[str] = []
        yield [line for line in lines if line.strip()], keep
        if not file.exists() and not keep:
            return
        if not keep:
            file.unlink()
        else:
            temporary = file.with_name(file.name + ".tmp")
            _write_synced(temporary, "".join(line + "\n" for line in keep).encode("utf-8"), os.O_TRUNC)
            os.replace(temporary, file)
        _fsync_dir(file.parent)
