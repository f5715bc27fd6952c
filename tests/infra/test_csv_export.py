"""Streaming CSV (infra/csv_export.py): formula cells defused, pages read off the event
loop's thread and off the shared sync thread, the export's connection closed at the end."""
from __future__ import annotations

import asyncio
import threading

from decimal import Decimal

import pytest

from infra.csv_export import csv_lines, csv_safe, stream_csv


@pytest.mark.parametrize("cell,expected", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"),
    ("plain", "plain"), ("a=b", "a=b"), ("", ""), (None, ""), (12, "12"),
])
def test_cells_a_spreadsheet_would_evaluate_get_a_quote(cell, expected):
    assert csv_safe(cell) == expected


@pytest.mark.parametrize("number, expected", [(-12, "-12"), (Decimal("-3.00"), "-3.00"), (Decimal("0.50"), "0.50")])
def test_numbers_negative_ones_too_are_written_as_they_are(number, expected):
    assert csv_safe(number) == expected


def test_lines_are_quoted_csv():
    assert csv_lines([["a,b", 'say "hi"', "=x"]]) == b'"a,b","say ""hi""",\'=x\r\n'


async def test_pages_are_read_in_order_on_one_thread_that_is_not_the_loops():
    threads, cursors = set(), []

    def fetch_page(cursor):
        threads.add(threading.current_thread().name)
        cursors.append(cursor)
        start = cursor or 0
        rows = [[n] for n in range(start, min(start + 3, 7))]
        return rows, (start + 3 if start + 3 < 7 else None)

    body = b"".join([chunk async for chunk in stream_csv(["n"], fetch_page)])
    assert body.decode().split() == ["n", *map(str, range(7))]
    assert cursors == [None, 3, 6]
    assert len(threads) == 1 and next(iter(threads)).startswith("csv-export")


async def test_the_loop_keeps_running_while_a_page_is_read():
    release = threading.Event()

    def slow_page(cursor):
        release.wait(5)
        return [["x"]], None

    stream = stream_csv(["h"], slow_page)
    assert await stream.__anext__() == b"h\r\n"
    reading = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)
    assert not reading.done()  # the page is being read, and this coroutine still runs
    release.set()
    assert await reading == b"x\r\n"
    await stream.aclose()


async def test_a_page_being_read_does_not_hold_the_shared_sync_thread():
    # Django runs sync views and thread-sensitive database calls on one shared thread:
    # while an export page is read, such a call must still go through at once.
    from asgiref.sync import sync_to_async

    release = threading.Event()

    def slow_page(cursor):
        release.wait(5)
        return [["x"]], None

    stream = stream_csv(["h"], slow_page)
    await stream.__anext__()
    reading = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.05)
    try:
        assert await asyncio.wait_for(sync_to_async(lambda: "served")(), timeout=1) == "served"
        assert not reading.done()
    finally:
        release.set()
    await reading
    await stream.aclose()
