"""Streaming CSV for exports of big tables, without holding a shared thread.

Under ASGI, Django reads a *synchronous* streaming iterator in its one shared
sync thread (the thread every sync view and `sync_to_async` call of the process
queues on): a long export read that way stalls them all. `stream_csv` is an
*asynchronous* iterator instead: it asks for one page of rows at a time (keyset
pagination, so each page is one short indexed query) on a thread of its own and
yields the encoded page, so the event loop and the shared thread stay free.
"""
from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

# A cell a spreadsheet would take for a formula (CSV injection): starting with one
# of these, it is prefixed with a quote so it is shown as text.
FORMULA_STARTS = frozenset("=+-@\t\r")

# fetch_page(cursor) -> (rows, next cursor or None when there are no more).
PageFetcher = Callable[[Any], tuple[list[Sequence[Any]], Any]]


def csv_safe(value: Any) -> str:
    """The cell's text, defused if a spreadsheet would evaluate it."""
    if value is None:
        return ""
    if type(value) in (int, Decimal):
        return str(value)  # a number, negative ones too, is never a formula
    text = value if type(value) is str else str(value)
    return "'" + text if text[:1] in FORMULA_STARTS else text


def csv_lines(rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([csv_safe(cell) for cell in row])
    return buffer.getvalue().encode()


async def stream_csv(header: Sequence[str], fetch_page: PageFetcher) -> AsyncIterator[bytes]:
    """The header, then each page `fetch_page` returns, as CSV bytes.

    Pages are read one after the other on one thread made for this export (one
    database connection, closed when the export ends, however it ends)."""
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csv-export")

    def fetch(cursor):
        close_old_connections()
        rows, next_cursor = fetch_page(cursor)
        return csv_lines(rows), next_cursor

    fetch_async = sync_to_async(fetch, thread_sensitive=False, executor=executor)
    try:
        yield csv_lines([header])
        cursor = None
        while True:
            chunk, cursor = await fetch_async(cursor)
            if chunk:
                yield chunk
            if cursor is None:
                return
    finally:
        # Runs after any page still being read; no await here (this may be a cancellation).
        executor.submit(connections.close_all)
        executor.shutdown(wait=False)
