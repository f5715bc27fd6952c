"""The usage rollups on a large installation: ``python -m bench.billing [--records N --orgs N --db …]``.

Loads ``--records`` usage records (1,000,000 by default) across ``--orgs`` organizations (50)
into a fresh, migrated database, then times what billing does with them:

- the full rollup: ``billing.rollups.usage_rollup_hours`` over every hour with records, in one
  call (one transaction: the hourly rows, then the daily ones derived from them), then the same
  call again (as ``manage.py rollup_usage`` over rolled-up hours: it deletes their rows first);
- an incremental run as beat makes it (``usage_rollup_recent``: the open hour and the grace
  window back from now), median of 5;
- exactness: the records' requests, tokens and cost (integer pico-dollars, billing/sums.py)
  summed per org and UTC day, against the hourly rollups and against the daily ones: OK or FAIL;
- the overview's figures for the busiest org over the previous calendar month
  (``billing.selectors.usage_figures`` and ``top_models``), median of 10 after a warm-up;
- the "Usage & billing" page (``usage``, billing/views/usage.py) of the busiest org for the
  previous month (``?period=last_month``) through Django's test ``Client`` signed in as an
  auditor of the org (``force_login``, the whole middleware stack, the template rendered):
  median and p95 of 10 renders after 2 warm-ups, and the queries one render makes;
- the monthly billing reports: ``billing.reports.reports_refresh`` once (the drafts, or final
  reports once due, of the previous and the open month for every org).

Databases: ``--db sqlite`` uses a file in a temporary directory; ``--db postgres`` creates its
own database ``openclaw_bench_billing`` on the server ``DATABASE_URL`` names (dropped first,
and at the end unless ``--keep``); ``--db both`` (the default) runs one after the other, each in
a process of its own, and prints one table.

The records are generated in the database (bench/bulk.py), the same mix on both databases
(every dimension is a fixed function of the row number, except the request ids): from the
first of the previous month (UTC) to now, evenly spaced and in time order; orgs skewed (the
busiest about 14% of the records, the quietest about 1%), 8 API keys per org, six platform
deployments with their own prices (one priced to the millionth of a dollar per million tokens,
so costs use all 12 decimal places), 20% through one of two routes, 45% with one of 400 end
users per org, and statuses in the proportions of a busy gateway (84% completed, 8% stopped at
max_tokens, 3% cancelled or client gone, 2.5% upstream errors and timeouts, 2% refused before
upstream with no deployment, 0.5% internal errors). Only completed, length-stopped and cancelled
requests cost money.

Never enforces the targets (the full rollup under 30 s on PostgreSQL, the usage page's median
under 300 ms); prints them as met or not.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from decimal import Decimal

from bench import bulk, report

DATABASE_NAME = "openclaw_bench_billing"
KEYS_PER_ORG = 8
END_USERS = 400
TARGET_S = 30.0
INCREMENTAL_RUNS = 5
SELECTOR_RUNS = 10
PAGE_RUNS = 10
PAGE_TARGET_MS = 300.0
# name, provider, input and output price (USD per million tokens), share of requests (%).
DEPLOYMENTS = (
    ("gpt-4o", "openai", "2.5", "10", 25),
    ("gpt-4o-mini", "openai", "0.15", "0.6", 30),
    ("claude-3-5-sonnet", "anthropic", "3", "15", 15),
    ("claude-3-haiku", "anthropic", "0.25", "1.25", 10),
    ("mistral-small", "mistral", "0.2", "0.6", 10),
    ("local-llama-70b", "self-hosted", "0.123457", "0.654321", 10),
)
ROUTES = ("best-available-general", "cheapest-chat")
# status, share in 1/200; the indices below follow this order.
STATUSES = (("completed", 168), ("length", 16), ("cancelled", 4), ("client_gone", 2), ("upstream_error", 4),
            ("upstream_timeout", 1), ("rejected", 4), ("internal_error", 1))
BILLED_BELOW, REJECTED = 4, 6  # statuses 0-3 cost money; status 6 never reached a deployment


def say(message: str) -> None:
    print(f"[bench billing {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.billing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="usage records to load (default 1,000,000)")
    parser.add_argument("--orgs", type=int, default=50, help="organizations (default 50)")
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--keep", action="store_true",
                        help=f"keep the PostgreSQL database {DATABASE_NAME} (and print the SQLite file's path, kept)")
    parser.add_argument("--explain", action="store_true",
                        help="on PostgreSQL, print EXPLAIN ANALYZE of the full rollup's INSERTs even under the target")
    parser.add_argument("--json", help=argparse.SUPPRESS)  # where a child process writes its results
    args = parser.parse_args(argv)
    if args.records < 1000 or not 1 <= args.orgs <= 10_000:
        parser.error("--records must be at least 1,000 and --orgs between 1 and 10,000")
    return args


# --- loading -------------------------------------------------------------------------------

# Uniform integers in [0, P) from the row number: (i * A + C) mod P, one prime P per dimension,
# so the dimensions are (nearly) independent and both databases draw the same values.
_HASHES = ((2654435761, 12345, 1000003), (40503, 777, 999983), (2246822519, 4242, 1000033),
           (3266489917, 99, 1000037), (668265263, 31337, 999979), (374761393, 2718, 1000039),
           (1181783497, 1618, 999961), (2870177450, 1414, 1000081), (1597334677, 7, 999953))


def _u(n: int) -> str:
    a, c, p = _HASHES[n]
    return f"((i * {a} + {c}) %% {p})"


def _skewed(n: int, buckets: int) -> str:
    """An integer in [0, buckets), bucket b drawn with probability ~ (sqrt(b+1) - sqrt(b)) / sqrt(buckets)."""
    p = _HASHES[n][2]
    return f"(({_u(n)} * {_u(n)} / {p}) * {buckets} / {p})"


def _weighted(shares) -> list[int]:
    return [index for index, share in enumerate(shares) for _ in range(share)]


def load(*, records: int, orgs: int) -> dict:
    from django.db import connection
    from django.utils import timezone

    from billing.models import UsageRecord
    from catalog.models import Deployment, Route
    from tenants.services import api_key_create, org_create

    say(f"creating {orgs} orgs with {KEYS_PER_ORG} keys each, {len(DEPLOYMENTS)} deployments, {len(ROUTES)} routes")
    org_ids, key_ids = [], []
    for n in range(orgs):
        org = org_create(slug=f"bench-billing-{n:03d}", name=f"Billing benchmark {n}")
        org_ids.append(org.pk)
        key_ids += [api_key_create(org=org, name=f"service-{k}").api_key.pk for k in range(KEYS_PER_ORG)]
    deployments = [Deployment.objects.create(name=name, provider=provider, litellm_model=f"{provider}/{name}",
                                             input_price_per_mtok=price_in, output_price_per_mtok=price_out)
                   for name, provider, price_in, price_out, _share in DEPLOYMENTS]
    routes = [Route.objects.create(alias=alias) for alias in ROUTES]

    now = timezone.now()
    first = (now.replace(day=1, hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)).replace(day=1)
    start_us = int(first.timestamp() * 1_000_000)
    # Whole milliseconds: SQLite keeps times to the millisecond, and both databases get the same times.
    step_us = int((now - first).total_seconds() * 1_000) // records * 1_000

    s = "g.s"
    pt = f"(CASE WHEN {s} = {REJECTED} THEN 0 ELSE g.pt END)"
    ct = (f"(CASE {s} WHEN 0 THEN 1 + g.ct %% 1000 WHEN 1 THEN 1024 WHEN 2 THEN g.ct %% 300 "
          "WHEN 3 THEN g.ct %% 300 ELSE 0 END)")
    picos = (f"(CASE WHEN {s} < {BILLED_BELOW} THEN {pt} * {bulk.pick('in_ppt', 'g.d')} "
             f"+ {ct} * {bulk.pick('out_ppt', 'g.d')} ELSE 0 END)")
    started = "(%(start_us)s + (i - 1) * %(step_us)s)"
    served = f"{s} <> {REJECTED}"
    say(f"loading {records:,} usage records from {first:%Y-%m-%d} to {now:%Y-%m-%d %H:%M} UTC")
    loaded = time.monotonic()
    bulk.insert_generated(UsageRecord, {
        "request_id": bulk.uuid(),
        "org_id": bulk.pick("org_ids", "g.o"),
        "api_key_id": bulk.pick("key_ids", f"g.o * {KEYS_PER_ORG} + g.k"),
        "end_user": "(CASE WHEN g.eu < 0 THEN '' ELSE 'end-user-' || g.eu END)",
        "requested_model": (f"(CASE WHEN g.via >= 0 THEN {bulk.pick('route_aliases', 'g.via', 'text')} "
                            f"ELSE {bulk.pick('dep_names', 'g.d', 'text')} END)"),
        "deployment_id": f"(CASE WHEN {served} THEN {bulk.pick('dep_ids', 'g.d')} END)",
        "deployment_name": f"(CASE WHEN {served} THEN {bulk.pick('dep_names', 'g.d', 'text')} ELSE '' END)",
        "provider": f"(CASE WHEN {served} THEN {bulk.pick('dep_providers', 'g.d', 'text')} ELSE '' END)",
        "via_route_id": f"(CASE WHEN g.via >= 0 THEN {bulk.pick('route_ids', 'g.via')} END)",
        "status": bulk.pick("statuses", s, "text"),
        "finish_reason": f"(CASE {s} WHEN 0 THEN 'stop' WHEN 1 THEN 'length' ELSE '' END)",
        "prompt_tokens": pt,
        "completion_tokens": ct,
        "prompt_tokens_source": f"(CASE WHEN {s} = {REJECTED} THEN 'none' ELSE 'provider' END)",
        "completion_tokens_source": f"(CASE WHEN {s} = {REJECTED} THEN 'none' ELSE 'provider' END)",
        "input_price_per_mtok": bulk.decimal(bulk.pick("in_ppt", "g.d"), 6),
        "output_price_per_mtok": bulk.decimal(bulk.pick("out_ppt", "g.d"), 6),
        "cost_usd": bulk.decimal(picos, 12),
        "max_tokens": "1024",
        "first_token_ms": f"(CASE WHEN {s} < {BILLED_BELOW} THEN 100 + g.pt %% 900 END)",
        "total_ms": "(300 + g.ct %% 20000)",
        "started_at": bulk.timestamp(started),
        "ended_at": bulk.timestamp(f"({started} + (300 + g.ct %% 20000) * 1000)"),
    }, {
        "org_ids": org_ids, "key_ids": key_ids,
        "dep_ids": [d.pk for d in deployments], "dep_names": [d.name for d in deployments],
        "dep_providers": [d.provider for d in deployments],
        # Picodollars per token = USD per million tokens x 10^6 (prices have 6 places).
        "in_ppt": [int(Decimal(d.input_price_per_mtok) * 1_000_000) for d in deployments],
        "out_ppt": [int(Decimal(d.output_price_per_mtok) * 1_000_000) for d in deployments],
        "route_ids": [r.pk for r in routes], "route_aliases": list(ROUTES),
        "statuses": [name for name, _share in STATUSES],
        "dep_shares": _weighted(share for *_rest, share in DEPLOYMENTS),
        "status_shares": _weighted(share for _name, share in STATUSES),
        "start_us": start_us, "step_us": step_us,
    }, derived={
        "o": _skewed(0, orgs),
        "k": _skewed(1, KEYS_PER_ORG),
        "d": bulk.pick("dep_shares", f"{_u(2)} %% 100"),
        "s": bulk.pick("status_shares", f"{_u(3)} %% 200"),
        "via": f"(CASE WHEN {_u(4)} %% 5 = 0 THEN {_u(4)} / 5 %% {len(ROUTES)} ELSE -1 END)",
        "eu": f"(CASE WHEN {_u(5)} %% 100 < 45 THEN {_skewed(6, END_USERS)} ELSE -1 END)",
        "pt": f"(20 + {_u(7)} %% 4000)",
        "ct": _u(8),
    }, total=records, what="usage records", say=say)
    load_s = time.monotonic() - loaded
    say("ANALYZE")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        if connection.vendor == "postgresql":
            cursor.execute("SELECT version()")
            server = cursor.fetchone()[0].split(" on ")[0]
        else:
            cursor.execute("SELECT sqlite_version()")
            server = f"SQLite {cursor.fetchone()[0]}"
    return {"org_ids": org_ids, "first": first, "now": now, "load_s": load_s, "server": server}


# --- measuring -----------------------------------------------------------------------------

def _timed(call):
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _totals_by_org_day():
    """{(org, day): (requests, prompt, completion, picos)} from the records, the hourly and the daily rollups."""
    from django.db.models import BigIntegerField, Count, F, Sum

    from billing.models import UsageDailyRollup, UsageHourTotal, UsageRecord, UsageRollup
    from billing.rollups import DayUTC
    from billing.sums import cost_picos

    def rows(queryset, day, requests, picos):
        return {(row["org"], str(row["d"])): (row["n"], int(row["p"]), int(row["c"]), int(row["x"]))
                for row in queryset.order_by().annotate(d=day).values("org", "d").annotate(
                    n=requests, p=Sum("prompt_tokens"), c=Sum("completion_tokens"),
                    x=Sum(picos, output_field=BigIntegerField()))}

    raw = rows(UsageRecord.objects.all(), DayUTC("started_at"), Count("pk"), cost_picos())
    hourly = rows(UsageRollup.objects.all(), DayUTC("hour"), Sum("requests"), "cost_picos")
    daily = rows(UsageDailyRollup.objects.all(), F("day"), Sum("requests"), "cost_picos")
    totals = rows(UsageHourTotal.objects.all(), DayUTC("hour"), Sum("requests"), "cost_picos")
    return raw, hourly, daily, totals


def measure(loaded: dict) -> dict:
    from django.db.models import Count

    from billing import selectors
    from billing.models import RollupProgress, UsageRecord
    from billing.rollups import start_progress, usage_rollup_hours, usage_rollup_recent
    from billing.sums import usd_from_picos
    from tenants.models import Organization

    first, now = loaded["first"], loaded["now"]
    # As for an installation upgraded with usage (billing migration 0010): the rollups are
    # trusted from the first record on, so the full rollup below brings them up to now.
    start_progress(RollupProgress, UsageRecord, first)
    say(f"full rollup: usage_rollup_hours({first.isoformat()}, {now.isoformat()})")
    full_s, full = _timed(lambda: usage_rollup_hours(first, now))
    say(f"full rollup: {full_s:.1f} s, {full.hourly_rows:,} hourly and {full.daily_rows:,} daily rows; steps: "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in full.seconds.items()))
    again_s, _again = _timed(lambda: usage_rollup_hours(first, now))
    say(f"full rollup again (deleting the rows first): {again_s:.1f} s")

    incremental = []
    for _ in range(INCREMENTAL_RUNS):
        seconds, run = _timed(usage_rollup_recent)
        incremental.append(seconds)
    hours = int((run.end - run.start).total_seconds() // 3600)
    recent_records = UsageRecord.objects.filter(started_at__gte=run.start, started_at__lt=run.end).count()
    say(f"incremental: median {statistics.median(incremental):.2f} s over {hours} hours, {run.hourly_rows:,} rows")

    say("checking the sums")
    raw, hourly, daily, totals = _totals_by_org_day()
    total = [sum(v[n] for v in raw.values()) for n in range(4)]
    exact = {"hourly": hourly == raw, "daily": daily == raw, "totals": totals == raw}

    busiest_pk = (UsageRecord.objects.order_by().values("org").annotate(n=Count("pk")).order_by("-n")
                  .values_list("org", flat=True).first())
    org = Organization.objects.get(pk=busiest_pk)
    month_start = first
    month_end = (first + timedelta(days=32)).replace(day=1)
    month_records = UsageRecord.objects.filter(org=org, started_at__gte=month_start, started_at__lt=month_end).count()
    selector_ms = {}
    for name, call in (("usage_figures", lambda: selectors.usage_figures(org=org, start=month_start, end=month_end)),
                       ("top_models", lambda: selectors.top_models(org=org, start=month_start, end=month_end))):
        call()
        samples = [_timed(call)[0] * 1000 for _ in range(SELECTOR_RUNS)]
        selector_ms[name] = statistics.median(samples)
        say(f"{name}: median {selector_ms[name]:.0f} ms")
    page = time_usage_page(org)
    say(f"usage page: median {page['p50']:.0f} ms, p95 {page['p95']:.0f} ms, {page['queries']} queries "
        f"({page['sql_ms']:.0f} ms of SQL)")
    say("reports_refresh")
    from billing.reports import reports_refresh

    reports_s, refreshed = _timed(reports_refresh)
    say(f"reports_refresh: {reports_s:.1f} s, {refreshed}")
    return {
        "full_s": full_s, "full_steps": full.seconds, "again_s": again_s, "hourly_rows": full.hourly_rows, "daily_rows": full.daily_rows,
        "incremental_s": statistics.median(incremental), "incremental_hours": hours,
        "incremental_rows": run.hourly_rows, "incremental_records": recent_records,
        "exact": exact, "org_days": len(raw), "requests": total[0], "tokens": total[1] + total[2],
        "cost_usd": str(usd_from_picos(total[3])),
        "month": f"{month_start:%Y-%m}", "month_records": month_records, "selector_ms": selector_ms,
        "page": page, "reports_s": reports_s, "reports": refreshed,
    }


def time_usage_page(org) -> dict:
    """The usage page of `org` for the previous month, as an auditor of the org sees it:
    median and p95 of PAGE_RUNS renders after 2 warm-ups, then one more counting queries."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from tenants.models import Membership

    auditor = get_user_model().objects.create(username=f"bench-auditor-{org.slug}")
    Membership.objects.create(org=org, user=auditor, role=Membership.Role.AUDITOR)
    client = Client()
    client.force_login(auditor)
    url = reverse("usage", kwargs={"org": org.slug}) + "?period=last_month"
    say(f"timing the usage page: {url}")

    def get():
        started = time.perf_counter()
        response = client.get(url)
        body = response.content
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        return elapsed, body

    for _ in range(2):
        get()
    samples = [get()[0] for _ in range(PAGE_RUNS)]
    with CaptureQueriesContext(connection) as captured:
        _elapsed, body = get()
    return {"url": url, "p50": statistics.median(samples), "p95": report.pct(samples, 95),
            "queries": len(captured.captured_queries), "bytes": len(body),
            "sql_ms": sum(float(q["time"]) for q in captured.captured_queries) * 1000}


def explain_full_rollup(first: datetime, now: datetime) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the full rollup's two INSERT ... SELECTs, run in a
    transaction rolled back afterwards."""
    from django.db import connection, transaction

    from billing.rollups import usage_rollup_hours

    plans = []

    def explaining(execute, sql, params, many, context):
        if not sql.startswith("INSERT INTO"):
            return execute(sql, params, many, context)
        result = execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params, many, context)
        plans.append("\n".join(row[0] for row in context["cursor"].fetchall()))
        return result

    class Rollback(Exception):
        pass

    try:
        with connection.execute_wrapper(explaining), transaction.atomic():
            usage_rollup_hours(first, now)
            raise Rollback
    except Rollback:
        pass
    return "\n\n".join(plans)


# --- running -------------------------------------------------------------------------------

def run_one(args, db: str) -> dict:
    """Load and measure in this process, on `db` (Django is set up here)."""
    machine = report.machine()
    data_dir = tempfile.mkdtemp(prefix="openclaw-bench-billing-")
    url = None
    os.environ.update(OPENCLAW_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="openclaw_site.settings")
    os.environ.pop("REDIS_URL", None)  # no Redis needed; never touch a shared one
    if db == "postgres":
        from tests.support.stack import recreate_pg_database

        url = recreate_pg_database(os.environ["DATABASE_URL"], DATABASE_NAME)
        os.environ["DATABASE_URL"] = url
    else:
        os.environ.pop("DATABASE_URL", None)
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        say(f"migrating a fresh {db} database")
        call_command("migrate", verbosity=0, interactive=False)
        loaded = load(records=args.records, orgs=args.orgs)
        results = measure(loaded)
        if db == "postgres" and (args.explain or results["full_s"] > TARGET_S):
            say("EXPLAIN ANALYZE of the full rollup's INSERTs")
            results["explain"] = explain_full_rollup(loaded["first"], loaded["now"])
            print(results["explain"], file=sys.stderr)
        connections.close_all()
    finally:
        if db == "postgres" and not args.keep:
            from tests.support.stack import drop_pg_database

            drop_pg_database(url)
        if db == "sqlite" and args.keep:
            say(f"kept {data_dir}")
        else:
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)
    machine["load_after"] = report.loadavg()
    return {"db": db, "machine": machine, "server": loaded["server"], "load_s": loaded["load_s"],
            "records": args.records, "orgs": args.orgs, **results}


def run_child(args, db: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, "-m", "bench.billing", "--db", db, "--records", str(args.records),
                   "--orgs", str(args.orgs), "--json", out.name] + (["--keep"] if args.keep else []) + (
                      ["--explain"] if args.explain else [])
        subprocess.run(command, check=True)
        with open(out.name) as f:
            return json.load(f)


def render(results: list[dict]) -> str:
    f = report._f
    lines = []
    for r in results:
        m = r["machine"]
        lines.append(f"- {r['db']}: {m['date']}, {m['cpu']}, {m['cores']} cores, {m['ram_gib']:.0f} GiB RAM; "
                     f"{r['server']}; Python {m['python']}; load average {m['load_before']} before, "
                     f"{m['load_after']} after; loaded {r['records']:,} records ({r['orgs']} orgs) in "
                     f"{f(r['load_s'], 0)} s.")
    lines += ["", "| " + " | ".join(["measure"] + [r["db"] for r in results]) + " |",
              "| --- |" + " ---: |" * len(results)]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in results) + " |")

    row("full rollup, one call (s)", lambda r: f(r["full_s"], 1))
    row("  hourly / daily rows written", lambda r: f"{r['hourly_rows']:,} / {r['daily_rows']:,}")
    row("  of which (s): hourly / daily / hour totals / day facets / commit",
        lambda r: " / ".join(f(r.get("full_steps", {}).get(name, float("nan")), 1)
                             for name in ("hourly", "daily", "totals", "facets", "commit")))
    row(f"  under {TARGET_S:.0f} s (PostgreSQL's target)",
        lambda r: report._met(r["full_s"] < TARGET_S) if r["db"] == "postgres" else "")
    row("full rollup again, over its own rows (s)", lambda r: f(r["again_s"], 1))
    row(f"incremental run, open hour + grace (s, median of {INCREMENTAL_RUNS})", lambda r: f(r["incremental_s"], 2))
    row("  hours / records / hourly rows", lambda r: f"{r['incremental_hours']} / {r['incremental_records']:,} / "
                                                     f"{r['incremental_rows']:,}")
    row("exact: hourly = records, per org and day", lambda r: "OK" if r["exact"]["hourly"] else "**FAIL**")
    row("exact: daily = records, per org and day", lambda r: "OK" if r["exact"]["daily"] else "**FAIL**")
    row("exact: hour totals = records, per org and day",
        lambda r: "OK" if r["exact"].get("totals") else "**FAIL**")
    row("  org-days / requests / tokens", lambda r: f"{r['org_days']:,} / {r['requests']:,} / {r['tokens']:,}")
    row("  total cost (USD)", lambda r: r["cost_usd"])
    row(f"usage_figures, busiest org, one month (ms, median of {SELECTOR_RUNS})",
        lambda r: f(r["selector_ms"]["usage_figures"]))
    row(f"top_models, same (ms, median of {SELECTOR_RUNS})", lambda r: f(r["selector_ms"]["top_models"]))
    row("  month / its records", lambda r: f"{r['month']} / {r['month_records']:,}")
    row(f"usage page, same org, `?period=last_month`, auditor (ms, median of {PAGE_RUNS})",
        lambda r: f(r["page"]["p50"]))
    row("  p95 (ms) / queries per render / their SQL ms", lambda r: f"{f(r['page']['p95'])} / {r['page']['queries']} / "
                                                                 f"{f(r['page'].get('sql_ms', float('nan')))}")
    row(f"  median under {PAGE_TARGET_MS:.0f} ms", lambda r: report._met(r["page"]["p50"] < PAGE_TARGET_MS))
    row("reports_refresh, all orgs, previous + open month (s, once)", lambda r: f(r["reports_s"], 1))
    row("  orgs / reports built / finalized",
        lambda r: f"{r['reports']['orgs']} / {r['reports']['built']} / {r['reports']['finalized']}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse(argv)
    dbs = ("sqlite", "postgres") if args.db == "both" else (args.db,)
    if "postgres" in dbs and not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("bench.billing --db postgres|both needs DATABASE_URL pointing at a PostgreSQL server "
              f"(it creates and drops its own database, {DATABASE_NAME}, there)", file=sys.stderr)
        return 2
    if args.json:
        result = run_one(args, args.db)
        with open(args.json, "w") as out:
            json.dump(result, out)
        return 0
    results = [run_one(args, dbs[0])] if len(dbs) == 1 else [run_child(args, db) for db in dbs]
    print(render(results))
    for result in results:
        if result.get("explain"):
            print(f"EXPLAIN ANALYZE of the full rollup's INSERTs ({result['db']}):\n\n{result['explain']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
