"""The dashboard's log pages on a large org: ``python -m bench.dashboard [--events N --records N]``.

On PostgreSQL only (``DATABASE_URL`` required: the server to use). The benchmark creates its
own database beside it, ``openclaw_bench_dashboard`` (dropped first, dropped again at the end
unless ``--keep``), migrates it, and loads one org with ``--events`` audit events and
``--records`` usage records (1,000,000 each by default) server-side, with
``INSERT ... SELECT ... FROM generate_series`` in batches (bench/bulk.py): about a minute per million rows on
a 2-core machine. Every other column of the two tables gets its model default, so the loader
follows schema changes.

The rows:

- usage records over the last 365 days, spread over 20 API keys, three model names and the
  statuses in about the proportions a busy org sees (mostly completed, 10% stopped at
  max_tokens, 2% each upstream error, cancelled and rejected), drawn with a fixed seed;
- audit events over the same year on the org's chain, continuing it after the real events
  the set-up wrote (org and key creation), by 25 member users and the system, ten actions.
  Their ``seq`` and ``prev_hash`` links are consistent, but the hashes are synthetic
  (``sha256('bench:' || seq)``, not the hash of the content), so ``verify_chain`` would report
  the first loaded event: verification is not what this benchmark times. (The set-up's own
  few events come first in the chain but are the newest by time.)

Then ``ANALYZE`` and, through Django's test ``Client`` signed in as an auditor
(``force_login``, the whole middleware stack, templates rendered), ``--renders`` renders
(default 20, after 2 warm-up renders) of each page: the request log and the audit log, first
page unfiltered and first page filtered on indexed fields (one API key and one status; one
actor and one action). Reported: median and p95 wall time, the queries one render makes and
their total SQL time. Then the CSV export of a filtered set of each log (one key; one actor:
tens of thousands of rows), followed from the page's own ``a#export-csv`` link and read to
the end: rows per second. Target: a page (first or filtered) under 200 ms at the median.

Never touches another database; never enforces the target.
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import os
import re
import statistics
import sys
import tempfile
import time
from urllib.parse import urlparse, urlunparse

from bench import bulk, report

DATABASE_NAME = "openclaw_bench_dashboard"
ORG_SLUG = "bench-dashboard"
KEYS = 20
ACTORS = 25
ACTIONS = ("api_key.create", "api_key.revoke", "api_key.rotate", "membership.set", "membership.remove",
           "budget.create", "budget.update", "login.succeeded", "login.failed", "access.denied")
MODELS = ("gpt-4-turbo", "claude-3-opus", "best_available_general")
TARGET_MS = 200.0
SEED = 0.42


def say(message: str) -> None:
    print(f"[bench dashboard {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="audit events to load (default 1,000,000)")
    parser.add_argument("--records", type=int, default=1_000_000, help="usage records to load (default 1,000,000)")
    parser.add_argument("--renders", type=int, default=20, help="timed renders per page (default 20)")
    parser.add_argument("--keep", action="store_true", help=f"keep the {DATABASE_NAME} database afterwards")
    args = parser.parse_args(argv)
    if min(args.events, args.records) < 1000 or args.renders < 1:
        parser.error("--events and --records must be at least 1,000, --renders at least 1")
    return args


# --- loading -------------------------------------------------------------------------------

def load(*, events: int, records: int) -> dict:
    """The org, an auditor, the members and keys, then the bulk rows. Returns what the pages need."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone

    from billing.models import UsageRecord
    from tenants.audit import GENESIS
    from tenants.models import AuditEvent, Membership
    from tenants.services import api_key_create, org_create

    org = org_create(slug=ORG_SLUG, name="Dashboard benchmark")
    User = get_user_model()
    auditor = User.objects.create(username="bench-auditor")
    Membership.objects.create(org=org, user=auditor, role=Membership.Role.AUDITOR)
    actors = [f"user-{n:02d}" for n in range(ACTORS)]
    for username in actors:
        user = User.objects.create(username=username)
        Membership.objects.create(org=org, user=user, role=Membership.Role.MEMBER)
    keys = [api_key_create(org=org, name=f"service-{n:02d}").api_key for n in range(KEYS)]

    now = timezone.now()
    year_ago = now - timezone.timedelta(days=365)
    head = AuditEvent.objects.filter(chain=str(org.public_id)).order_by("-seq").values("seq", "hash").first()
    say(f"loading {records:,} usage records")
    loaded = time.monotonic()
    bulk.insert_generated(UsageRecord, {
        "request_id": "gen_random_uuid()",
        "org_id": "%(org_id)s",
        "api_key_id": "(%(key_ids)s::bigint[])[1 + floor(random() * %(keys)s)::int]",
        "end_user": "CASE WHEN random() < 0.5 THEN 'end-user-' || floor(random() * 1000)::int ELSE '' END",
        "requested_model": "(%(models)s::text[])[1 + floor(random() * 3)::int]",
        "deployment_name": "'mock-' || (i %% 3)",
        "provider": "'mock'",
        "status": ("CASE WHEN r < 0.02 THEN 'upstream_error' WHEN r < 0.04 THEN 'cancelled' "
                   "WHEN r < 0.06 THEN 'rejected' WHEN r < 0.16 THEN 'length' ELSE 'completed' END"),
        "prompt_tokens": "50 + (i * 7919) %% 2000",
        "completion_tokens": "(i * 104729) %% 800",
        "prompt_tokens_source": "'provider'",
        "completion_tokens_source": "'provider'",
        "input_price_per_mtok": "10",
        "output_price_per_mtok": "30",
        "cost_usd": "((50 + (i * 7919) %% 2000) * 10 + ((i * 104729) %% 800) * 30) / 1000000.0",
        "max_tokens": "1024",
        "first_token_ms": "100 + (i * 31) %% 400",
        "total_ms": "500 + (i * 131) %% 5000",
        "started_at": "%(start)s + (i - 1) * %(step)s * interval '1 microsecond'",
        "ended_at": "%(start)s + (i - 1) * %(step)s * interval '1 microsecond' + interval '2 seconds'",
    }, {"org_id": org.pk, "key_ids": [k.pk for k in keys], "keys": KEYS, "models": list(MODELS),
        "start": year_ago, "step": int(365 * 86400 * 1e6 / records)}, total=records, what="usage records", say=say, seed=SEED)
    records_s = time.monotonic() - loaded

    say(f"loading {events:,} audit events")
    loaded = time.monotonic()
    base, head_hash = (head["seq"], head["hash"]) if head else (0, GENESIS)
    bulk.insert_generated(AuditEvent, {
        "public_id": "gen_random_uuid()",
        "org_id": "%(org_id)s",
        "chain": "%(chain)s",
        "seq": "%(base)s + i",
        "actor_type": "CASE WHEN i %% 10 = 0 THEN 'system' ELSE 'user' END",
        "actor": "CASE WHEN i %% 10 = 0 THEN 'celery' ELSE (%(actors)s::text[])[1 + floor(random() * %(n_actors)s)::int] END",
        "action": "(%(actions)s::text[])[1 + floor(random() * %(n_actions)s)::int]",
        "target_type": "'api_key'",
        "target_id": "(%(key_uuids)s::text[])[1 + (i %% %(keys)s)]",
        "data": "jsonb_build_object('name', 'service-' || lpad((i %% %(keys)s)::text, 2, '0'))",
        "created_at": "%(start)s + (i - 1) * %(step)s * interval '1 microsecond'",
        "prev_hash": "CASE WHEN i = 1 THEN %(head_hash)s ELSE encode(sha256(('bench:' || (%(base)s + i - 1))::bytea), 'hex') END",
        "hash": "encode(sha256(('bench:' || (%(base)s + i))::bytea), 'hex')",
    }, {"org_id": org.pk, "chain": str(org.public_id), "base": base, "head_hash": head_hash,
        "actors": actors, "n_actors": ACTORS, "actions": list(ACTIONS), "n_actions": len(ACTIONS),
        "key_uuids": [str(k.public_id) for k in keys], "keys": KEYS,
        "start": year_ago, "step": int(365 * 86400 * 1e6 / events)}, total=events, what="audit events", say=say, seed=SEED)
    events_s = time.monotonic() - loaded

    say("ANALYZE")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("SELECT version()")
        server = cursor.fetchone()[0].split(" on ")[0]
    return {"org": org, "auditor": auditor, "keys": keys, "actors": actors, "server": server,
            "load_s": {"usage records": records_s, "audit events": events_s}}


# --- measuring -----------------------------------------------------------------------------

ROW_MARKERS = {"requests": "data-request-id=", "audit_log": "data-event-id="}


def _render(client, url: str):
    started = time.perf_counter()
    response = client.get(url)
    body = response.content
    return (time.perf_counter() - started) * 1000, response, body


def time_page(client, url: str, *, marker: str, renders: int) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(2):
        _elapsed, response, body = _render(client, url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
    samples = [_render(client, url)[0] for _ in range(renders)]
    with CaptureQueriesContext(connection) as captured:
        _elapsed, _response, body = _render(client, url)
    text = body.decode()
    return {"url": url, "p50": statistics.median(samples), "p95": report.pct(samples, 95),
            "queries": len(captured.captured_queries),
            "sql_ms": sum(float(q["time"]) for q in captured.captured_queries) * 1000,
            "rows": text.count(marker), "export": _export_link(text, url)}


def _export_link(text: str, page_url: str) -> str | None:
    match = re.search(r'<a\b[^>]*\bid="export-csv"[^>]*>', text)
    if not match:
        return None
    href = re.search(r'\bhref="([^"]*)"', match.group(0))
    if not href:
        return None
    link = html.unescape(href.group(1))
    if link.startswith("?"):
        return page_url.split("?", 1)[0] + link
    return link


async def _download(url: str, cookies) -> tuple[int, bytes]:
    """GET `url` with an AsyncClient carrying the session cookie, reading a streamed
    body to the end: the exports stream from an asynchronous iterator, as under ASGI."""
    from django.test import AsyncClient

    client = AsyncClient()
    client.cookies = cookies
    response = await client.get(url)
    if not response.streaming:
        return response.status_code, response.content
    if response.is_async:
        return response.status_code, b"".join([chunk async for chunk in response.streaming_content])
    return response.status_code, b"".join(response.streaming_content)


def time_export(client, url: str, *, runs: int = 3) -> dict:
    import asyncio

    results = []
    for _ in range(runs):
        started = time.perf_counter()
        status, content = asyncio.run(_download(url, client.cookies))
        elapsed = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"GET {url} answered {status}")
        rows = sum(1 for _ in csv.reader(io.StringIO(content.decode()))) - 1  # minus the header
        results.append((elapsed, rows))
    elapsed = statistics.median(e for e, _ in results)
    rows = results[-1][1]
    return {"url": url, "rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed if elapsed else float("nan"),
            "bytes": len(content)}


def measure(loaded: dict, *, renders: int) -> dict:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(loaded["auditor"])
    org = loaded["org"].slug
    key = loaded["keys"][3]
    actor = loaded["actors"][7]
    pages = {
        "request log, first page": ("requests", ""),
        "request log, filtered (key + status)": ("requests", f"?key={key.public_id}&status=upstream_error"),
        "audit log, first page": ("audit_log", ""),
        "audit log, filtered (actor + action)": ("audit_log", f"?actor={actor}&action=api_key.revoke"),
    }
    exports = {
        "request log, one key": ("requests", f"?key={key.public_id}"),
        "audit log, one actor": ("audit_log", f"?actor={actor}"),
    }
    results = {"pages": {}, "exports": {}}
    for label, (name, query) in pages.items():
        url = reverse(name, kwargs={"org": org}) + query
        say(f"timing {label}: {url}")
        results["pages"][label] = page = time_page(client, url, marker=ROW_MARKERS[name], renders=renders)
        if not page["rows"]:
            say(f"{label}: no rows marked {ROW_MARKERS[name]!r} on the page: is the page built, the filter right?")
    for label, (name, query) in exports.items():
        page = time_page(client, reverse(name, kwargs={"org": org}) + query, marker=ROW_MARKERS[name], renders=1)
        if page["export"] is None:
            say(f"{label}: the page has no a#export-csv link; export not timed")
            results["exports"][label] = None
            continue
        say(f"exporting {label}: {page['export']}")
        results["exports"][label] = time_export(client, page["export"])
    return results


# --- report --------------------------------------------------------------------------------

def render(machine: dict, loaded: dict, results: dict, *, events: int, records: int, renders: int) -> str:
    f = report._f
    lines = [
        f"Run {machine['date']}: {machine['cpu']}, {machine['cores']} cores, {machine['ram_gib']:.0f} GiB RAM; "
        f"{loaded['server']}; Python {machine['python']}; load average {machine['load_before']} before, "
        f"{machine['load_after']} after.",
        "",
        f"Loaded {records:,} usage records in {f(loaded['load_s']['usage records'], 0)} s and {events:,} audit "
        f"events in {f(loaded['load_s']['audit events'], 0)} s (one org, then ANALYZE).",
        "",
        f"| page ({renders} renders, auditor) | rows shown | median ms | p95 ms | queries | SQL ms | "
        f"< {TARGET_MS:.0f} ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, page in results["pages"].items():
        lines.append(f"| {label} | {page['rows']} | {f(page['p50'])} | {f(page['p95'])} | {page['queries']} | "
                     f"{f(page['sql_ms'])} | {report._met(page['p50'] < TARGET_MS)} |")
    lines += ["", "| CSV export (filtered) | rows | seconds | rows/s | MB |", "| --- | ---: | ---: | ---: | ---: |"]
    for label, export in results["exports"].items():
        if export is None:
            lines.append(f"| {label} | no export link | | | |")
        else:
            lines.append(f"| {label} | {export['rows']:,} | {f(export['seconds'], 2)} | {f(export['rows_per_s'], 0)} | "
                         f"{f(export['bytes'] / 1e6, 1)} |")
    lines += ["", "Filters: " + "; ".join(f"{label}: `{page['url']}`" for label, page in results["pages"].items()
                                         if "?" in page["url"])]
    return "\n".join(lines) + "\n"


def _bench_url(server_url: str) -> str:
    parsed = urlparse(server_url)
    return urlunparse(parsed._replace(path=f"/{DATABASE_NAME}"))


def main(argv=None) -> int:
    args = parse(argv)
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith("postgres"):
        print("bench.dashboard needs DATABASE_URL pointing at a PostgreSQL server "
              "(it creates and drops its own database, " + DATABASE_NAME + ", there)", file=sys.stderr)
        return 2
    from tests.support.stack import drop_pg_database, recreate_pg_database

    machine = report.machine()
    url = recreate_pg_database(server_url, DATABASE_NAME)
    assert url == _bench_url(server_url)
    try:
        with tempfile.TemporaryDirectory(prefix="openclaw-bench-dashboard-") as data_dir:
            os.environ.update(DATABASE_URL=url, OPENCLAW_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="openclaw_site.settings")
            os.environ.pop("REDIS_URL", None)  # the pages need no Redis; never touch a shared one
            import django

            django.setup()
            from django.core.management import call_command
            from django.db import connections

            say(f"migrating {DATABASE_NAME}")
            call_command("migrate", verbosity=0, interactive=False)
            loaded = load(events=args.events, records=args.records)
            results = measure(loaded, renders=args.renders)
            connections.close_all()
        machine["load_after"] = report.loadavg()
        print(render(machine, loaded, results, events=args.events, records=args.records, renders=args.renders))
    finally:
        if args.keep:
            say(f"kept the database {DATABASE_NAME}")
        else:
            drop_pg_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
