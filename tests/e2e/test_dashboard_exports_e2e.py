"""The dashboard's exports against a real gateway process: a CSV export of 200,000 usage
records streams while sockets authenticate and stream from the mock LLM, and adds no
more than 100 ms (median) to either; and an audit chain check started from the page runs
in a real Celery worker."""
from __future__ import annotations

import asyncio
import re
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone as dt_timezone

import httpx
import pytest
import websockets

from tests.support.frames import next_frame, send_frame
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

RECORDS = 200_000
PROBES = 9
PASSWORD = "export-test-password-1"
ALLOWED_SLOWDOWN = 0.100  # seconds, on the median


@pytest.fixture(scope="module")
def export_stack(mockllm, tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("exports"), mock_api_base=mockllm.api_base, name="exports").prepare()
    stack.start_gateway()
    stack.start_worker()
    stack.manage("create_user", "auditor1", "--org", "demo", "--role", "auditor", "--password", PASSWORD)
    started = time.monotonic()
    _insert_usage_records(stack, RECORDS)
    print(f"inserted {RECORDS} usage records in {time.monotonic() - started:.1f}s")
    yield stack
    stack.stop()


def _insert_usage_records(stack: Stack, count: int) -> None:
    """Bulk-insert usage records straight into the stack's database (as years of traffic would)."""
    org_id, key_id = stack.query("SELECT o.id, k.id FROM tenants_organization o JOIN tenants_apikey k "
                                 "ON k.org_id = o.id WHERE o.slug = 'demo' ORDER BY k.id LIMIT 1")[0]
    start = datetime(2031, 1, 1, tzinfo=dt_timezone.utc)
    columns = ("request_id", "client_request_id", "org_id", "api_key_id", "end_user", "requested_model",
               "deployment_name", "provider", "provider_response_id", "route", "status", "finish_reason",
               "prompt_tokens", "completion_tokens", "prompt_tokens_source", "completion_tokens_source",
               "cost_usd", "first_token_ms", "total_ms", "started_at", "ended_at")

    def rows(pg: bool):
        for i in range(count):
            at = start + timedelta(seconds=i)
            stamp = at if pg else at.strftime("%Y-%m-%d %H:%M:%S.%f")
            rid = uuid.uuid4()
            yield (rid if pg else rid.hex, "", org_id, key_id, f"user-{i % 500}", "gpt-4-turbo", "gpt-4-turbo",
                   "mock", "", "{}", "completed", "stop", 100, 50, "provider", "provider", "0.000750000",
                   120, 800, stamp, stamp)

    if stack.sqlite_path is not None:
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(stack.sqlite_path, timeout=30)) as conn:
            conn.executemany(f"INSERT INTO billing_usagerecord ({', '.join(columns)}) "
                             f"VALUES ({', '.join('?' * len(columns))})", rows(pg=False))
            conn.commit()
    else:
        import psycopg

        with psycopg.connect(stack.pg_url) as conn:
            with conn.cursor().copy(f"COPY billing_usagerecord ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows(pg=True):
                    copy.write_row(row)
            conn.execute("ANALYZE billing_usagerecord")


async def _signed_in(base: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=60)
    page = await client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = await client.post("/accounts/login/", data={"username": "auditor1", "password": PASSWORD,
                                                          "csrfmiddlewaretoken": token, "next": "/"})
    assert response.status_code == 302, response.text[:500]
    return client


async def _probe(url: str, key: str) -> tuple[float, float]:
    """(seconds to authenticate a new socket, seconds to stream one completion)."""
    started = time.perf_counter()
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        assert (await next_frame(ws))["type"] == "auth_ok"
        authed = time.perf_counter()
        await send_frame(ws, {"type": "llm_request", "model": "gpt-4-turbo", "prompt": "Hello",
                              "parameters": {"max_tokens": 30}})
        while (frame := await next_frame(ws))["type"] not in ("llm_response_end", "error"):
            pass
        assert frame["type"] == "llm_response_end", frame
        return authed - started, time.perf_counter() - authed


async def _probes(stack: Stack, count: int, still_exporting=lambda: True) -> list[tuple[float, float]]:
    measured = []
    while len(measured) < count:
        sample = await _probe(stack.url(), stack.api_key)
        if still_exporting():
            measured.append(sample)
    return measured


async def test_a_big_csv_export_does_not_slow_sockets(export_stack):
    stack = export_stack
    base = f"http://127.0.0.1:{stack.port}"
    client = await _signed_in(base)
    try:
        await _probes(stack, 3)  # warm up: caches, connections
        baseline = await _probes(stack, PROBES)

        exports_done: list[int] = []
        exporting = asyncio.Event()

        async def export_repeatedly():
            while True:
                lines = 0
                async with client.stream("GET", "/orgs/demo/requests/export.csv") as response:
                    assert response.status_code == 200
                    exporting.set()
                    async for chunk in response.aiter_bytes():
                        lines += chunk.count(b"\n")
                exports_done.append(lines)

        exporter = asyncio.create_task(export_repeatedly())
        await asyncio.wait_for(exporting.wait(), 30)
        try:
            during = await _probes(stack, PROBES, still_exporting=lambda: not exporter.done())
        finally:
            exporter.cancel()
            await asyncio.gather(exporter, return_exceptions=True)
        if not exports_done:  # the probes outran one export: finish one to check it whole
            async with client.stream("GET", "/orgs/demo/requests/export.csv") as response:
                exports_done.append(sum([chunk.count(b"\n") async for chunk in response.aiter_bytes()]))
    finally:
        await client.aclose()

    # The header and every record (the probes' own requests are records of the org too).
    assert exports_done[0] >= RECORDS + 1
    auth_before = statistics.median(a for a, _ in baseline)
    auth_during = statistics.median(a for a, _ in during)
    stream_before = statistics.median(s for _, s in baseline)
    stream_during = statistics.median(s for _, s in during)
    report = (f"auth {auth_before * 1000:.1f} -> {auth_during * 1000:.1f} ms, "
              f"stream {stream_before * 1000:.1f} -> {stream_during * 1000:.1f} ms, exports {exports_done}")
    print(report)
    assert auth_during - auth_before <= ALLOWED_SLOWDOWN, report
    assert stream_during - stream_before <= ALLOWED_SLOWDOWN, report


async def test_a_chain_check_started_on_the_page_runs_in_the_worker(export_stack):
    stack = export_stack
    client = await _signed_in(f"http://127.0.0.1:{stack.port}")
    try:
        page = await client.get("/orgs/demo/audit/verify/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        response = await client.post("/orgs/demo/audit/verify/", data={"csrfmiddlewaretoken": token})
        assert response.status_code == 302
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = stack.query("SELECT status, checked, total FROM tenants_auditverification")
            if rows and rows[0][0] != "running":
                break
            await asyncio.sleep(0.2)
        log = (stack.data_dir / "worker.log").read_text()[-3000:]
        assert rows and rows[0][0] == "ok", (rows, log)
        assert rows[0][1] == rows[0][2] > 0
        page = await client.get("/orgs/demo/audit/verify/")
        assert "Intact" in page.text
    finally:
        await client.aclose()


async def test_dashboard_pages_leave_no_database_session_behind(export_stack):
    """Each page runs on a thread of its own under ASGI; its connection must close with
    the request (openclaw_site/http_connections.py), not wait for the garbage collector."""
    if export_stack.pg_url is None:
        pytest.skip("counts PostgreSQL sessions")
    import psycopg

    def sessions() -> int:
        with psycopg.connect(export_stack.pg_url) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND pid <> pg_backend_pid()").fetchone()[0]

    pages = ["/orgs/demo/", "/orgs/demo/requests/", "/orgs/demo/audit/", "/orgs/demo/usage/"]
    client = await _signed_in(f"http://127.0.0.1:{export_stack.port}")
    try:
        for page in pages * 3:  # warm: whatever the process opens once is open now
            assert (await client.get(page)).status_code == 200
        before = await asyncio.to_thread(sessions)
        for page in pages * 40:
            assert (await client.get(page)).status_code == 200
        after = await asyncio.to_thread(sessions)
    finally:
        await client.aclose()
    assert after <= before + 2, f"{after - before} more sessions after 160 pages ({before} -> {after})"
