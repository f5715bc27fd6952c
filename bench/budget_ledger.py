"""One request's budget step, reserve + settle, in-process: ``python -m bench.budget_ledger``
(also run by ``make bench``, after the streaming benchmark). About a minute.

Each iteration does what the gateway does for one request with two budgets (an org budget
and a key budget, limits far too large to ever refuse): plan a lease for a fresh request
UUID (``billing.budgets.counter_refs`` + ``plan_lease``), ``await ledger.reserve(lease)``,
then settle it as the usage writer does, without the usage record insert:

- Redis ledger: ``RedisLedger.settle_written([draft])`` with a draft carrying the lease
  (the usage writer's call), and separately the ``_settle`` script called directly;
- database ledger: ``DatabaseLedger._settle_one(request_id, nanos, tokens)`` through the
  ledger's own thread pool (``billing.ledger.run_in_db_thread``), as ``reserve`` runs. In the
  gateway this settlement runs inside ``write_and_settle``'s transaction with the usage
  record, so this times the budget step alone.

Variants, each in its own Python process (settings are read from the environment once):

- ``redis``: ``REDIS_URL`` = Redis database 9 (flushed at the start: db 9 only), with
  ``DATABASE_URL`` = a PostgreSQL database of its own, ``openclaw_bench_budget`` (dropped,
  recreated and migrated at the start), which Redis counters are rebuilt from;
- ``postgres``: the database ledger on that database (``select_for_update`` row locks);
- ``sqlite``: the database ledger on the embedded default (a fresh SQLite file), for reference.

Per variant: a warm-up (the first Redis reservation finds no counters, rebuilds them from
the database and waits out the rebuild grace), then ``--iterations`` sequential
reserve + settle (p50 / p95 / p99 of each part and of the whole, in ms), then
``--concurrency`` tasks doing ``--concurrent-ops`` reserve + settle between them
(throughput), and one bare round trip for scale (Redis ``PING``; ``SELECT 1`` through the
ledger's thread pool). After each variant, the leases still open and the reservations left
on the counters are reported (0 and 0 unless an operation failed).

Never touches anything else: not the ``openclaw`` / ``test_openclaw`` databases, not any
other Redis database. A service that does not answer skips its variants (reported).
Targets are reported as met or not met, never enforced.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from bench import report

REPO_ROOT = Path(__file__).resolve().parents[1]
DATABASE_NAME = "openclaw_bench_budget"
REDIS_URL = "redis://127.0.0.1:6379/9"
POSTGRES_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"  # as the Makefile's TEST_DATABASE_URL
NEVER_TOUCH_DATABASES = {"openclaw", "test_openclaw"}
NEVER_FLUSH_REDIS_DBS = {0, 7}  # 7: `make test-services`
TARGET_P50_MS = 1.0  # Redis reserve + settle at p50

ITERATIONS = 2000
WARM_UP = 200
CONCURRENCY = 50
CONCURRENT_OPS = 2000
FLOOR_SAMPLES = 500

# One realistic request: 1,000 counted prompt tokens, max_tokens 1,024, 200 tokens received.
PROMPT_TOKENS, MAX_TOKENS, COMPLETION_TOKENS = 1000, 1024, 200
INPUT_PRICE, OUTPUT_PRICE = "2.50", "10.00"

VARIANTS = {
    # name: (label, needs PostgreSQL, needs Redis)
    "redis": ("Redis", True, True),
    "postgres": ("database, PostgreSQL", True, False),
    "sqlite": ("database, SQLite", False, False),
}


def say(message: str) -> None:
    print(f"[bench budget {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- one variant, in its own process --------------------------------------------------------

def _fixtures(variant: str):
    """An org, a key, and two budgets that never refuse: the org's month and the key's day."""
    from decimal import Decimal

    from billing.budgets import applicable, load_budgets
    from billing.models import Budget
    from tenants.services import api_key_create, org_create

    org = org_create(slug=f"bench-budget-{variant}-{os.getpid()}", name="Budget benchmark")
    key = api_key_create(org=org, name="bench").api_key
    Budget.objects.create(org=org, name="org month", scope=Budget.Scope.ORG, window=Budget.Window.MONTH,
                          limit_usd=Decimal("1000000"))
    Budget.objects.create(org=org, name="key day", scope=Budget.Scope.KEY, api_key=key, window=Budget.Window.DAY,
                          limit_usd=Decimal("100000"), limit_tokens=10**12)
    rules = applicable(load_budgets(org.pk), key_id=key.pk, end_user="", route_id=None, deployment_id=None)
    assert len(rules) == 2, rules
    return org.pk, key.pk, rules


def _usage(key_id: int) -> dict:
    """The lease's recovery payload, shaped like gateway.budgeting._usage_for_recovery's."""
    return {
        "client_request_id": "bench", "api_key_id": key_id, "requested_model": "gpt-4-turbo", "end_user": "",
        "started_at": "2026-11-27T00:00:00+00:00", "deployment_id": None, "deployment_name": "mock-fast",
        "provider": "mock", "via_route_id": None,
        "route": {"deployment": "mock-fast", "provider": "mock", "strategy": "direct", "route": None, "rule": None,
                  "reason": "requested by name", "attempts": []},
        "prompt_tokens": PROMPT_TOKENS, "max_tokens": MAX_TOKENS,
        "input_price_per_mtok": INPUT_PRICE, "output_price_per_mtok": OUTPUT_PRICE,
    }


async def _measure(variant: str, org_id: int, key_id: int, rules, args) -> dict:
    import uuid
    from decimal import Decimal

    from django.db import connection
    from django.utils import timezone

    from billing import ledger as ledger_module
    from billing.budgets import counter_refs, plan_lease
    from catalog.money import Prices, request_cost
    from billing.usage import UsageDraft

    books = ledger_module.ledger()  # chosen by REDIS_URL, exactly as in the gateway
    expected_kind = "redis" if variant == "redis" else "database"
    assert books.kind == expected_kind, (books.kind, variant)
    prices = Prices(Decimal(INPUT_PRICE), Decimal(OUTPUT_PRICE))
    usage = _usage(key_id)
    cost = request_cost(prices, prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS)

    def new_request():
        request_id = uuid.uuid4()
        refs = counter_refs(rules, end_user="", at=timezone.now())
        lease = plan_lease(request_id=request_id, org_id=org_id, refs=refs, prices=prices,
                           prompt_tokens=PROMPT_TOKENS, max_tokens=MAX_TOKENS, usage=usage)
        draft = UsageDraft(request_id=request_id, client_request_id="bench", org_id=org_id, api_key_id=key_id,
                           requested_model="gpt-4-turbo", prompt_tokens=PROMPT_TOKENS,
                           completion_tokens=COMPLETION_TOKENS, cost_usd=cost, lease=lease)
        return lease, draft

    if books.kind == "redis":
        async def settle_written(lease, draft):
            await books.settle_written([draft])

        async def settle_script(lease, draft):
            nanos, tokens = ledger_module._actual(draft)
            await books._settle(keys=[books._leases, books._lease_key(draft.request_id)],
                                args=[str(draft.request_id), nanos, tokens])

        settles = {"settle_written": settle_written, "_settle script": settle_script}
    else:
        async def settle_one(lease, draft):
            await ledger_module.run_in_db_thread(books._settle_one, draft.request_id, *ledger_module._actual(draft))

        settles = {"_settle_one": settle_one}

    async def once(settle) -> tuple[float, float, float]:
        t0 = time.perf_counter()
        lease, draft = new_request()
        t1 = time.perf_counter()
        await books.reserve(lease)
        t2 = time.perf_counter()
        await settle(lease, draft)
        t3 = time.perf_counter()
        return t1 - t0, t2 - t1, t3 - t2

    async def sequential(settle, n: int) -> dict:
        plan, reserve, settled, total = [], [], [], []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            a, b, c = await once(settle)
            plan.append(a * 1000)
            reserve.append(b * 1000)
            settled.append(c * 1000)
            total.append((a + b + c) * 1000)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return {"total": report.summary(total), "plan": report.summary(plan), "reserve": report.summary(reserve),
                "settle": report.summary(settled), "per_s": n / wall, "cpu_ms_per_op": cpu * 1000 / n}

    async def concurrent(settle, tasks: int, ops: int) -> dict:
        left = [ops]
        latencies: list[float] = []
        errors: list[str] = []

        async def worker():
            while left[0] > 0:
                left[0] -= 1
                try:
                    a, b, c = await once(settle)
                    latencies.append((a + b + c) * 1000)
                except Exception as exc:  # noqa: BLE001 - counted and reported, never fatal
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(tasks)))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        return {"tasks": tasks, "ops": ops, "ok": len(latencies), "errors": len(errors),
                "first_error": errors[0] if errors else None, "wall_s": wall, "per_s": len(latencies) / wall,
                "latency": report.summary(latencies), "cpu_ms_per_op": cpu * 1000 / ops}

    if books.kind == "redis":
        async def round_trip():
            await books._redis.ping()
        floor_name = "Redis PING (same client)"
    else:
        def select_one():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()

        async def round_trip():
            await ledger_module.run_in_db_thread(select_one)
        floor_name = "SELECT 1 through the ledger's thread pool"

    result: dict = {"variant": variant, "kind": books.kind, "runs": {}}
    first_settle = next(iter(settles.values()))
    t0 = time.perf_counter()
    await once(first_settle)  # Redis: counters rebuilt from the database, then the rebuild grace
    result["first_ms"] = (time.perf_counter() - t0) * 1000
    for name, settle in settles.items():
        await sequential(settle, args.warm_up)
        await concurrent(settle, args.concurrency, args.concurrency * 2)
        say(f"{variant}: {args.iterations} sequential, reserve + {name}")
        stats0 = await _script_stats(books)
        seq = await sequential(settle, args.iterations)
        seq["redis_server"] = _stats_per_op(stats0, await _script_stats(books), args.iterations)
        say(f"{variant}: {args.concurrent_ops} over {args.concurrency} tasks, reserve + {name}")
        conc = await concurrent(settle, args.concurrency, args.concurrent_ops)
        result["runs"][name] = {"sequential": seq, "concurrent": conc}
        say(f"{variant} ({name}): p50 {seq['total']['p50']:.3f} ms, p99 {seq['total']['p99']:.3f} ms; "
            f"{conc['per_s']:,.0f}/s at {args.concurrency} tasks, {conc['errors']} errors")
    floor = []
    for _ in range(FLOOR_SAMPLES):
        t = time.perf_counter()
        await round_trip()
        floor.append((time.perf_counter() - t) * 1000)
    result["floor"] = {"name": floor_name, **report.summary(floor)}
    result["left_over"] = await _left_over(books, rules)
    result["server"] = await _server_version(books)
    return result


async def _script_stats(books) -> dict[str, tuple[int, int]]:
    """Redis only: the server's own count and time (µs) of the commands the ledger sends.
    Server-wide figures: another client running scripts at the same time shows up as
    more calls per operation than the ledger makes."""
    if books.kind != "redis":
        return {}
    stats = await books._redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for name, v in stats.items()
            if name in ("cmdstat_evalsha", "cmdstat_script|exists", "cmdstat_eval")}


def _stats_per_op(before: dict, after: dict, ops: int) -> dict | None:
    if not after:
        return None
    calls = sum(c for c, _ in after.values()) - sum(c for c, _ in before.values())
    usec = sum(u for _, u in after.values()) - sum(u for _, u in before.values())
    return {"calls_per_op": calls / ops, "server_ms_per_op": usec / 1000 / ops}


async def _left_over(books, rules) -> dict:
    """What the run left behind: open leases and reservations still on the counters (all 0)."""
    from django.utils import timezone

    from billing.budgets import counter_refs
    from infra.threads import run_in_db_thread
    from billing.models import BudgetLease

    states = await books.snapshot(counter_refs(rules, end_user="", at=timezone.now()))
    if books.kind == "redis":
        leases = await books._redis.zcard(books._leases)
    else:
        leases = await run_in_db_thread(BudgetLease.objects.count)
    return {"leases": leases, "reserved_nanos": sum(s.reserved_nanos for s in states),
            "reserved_tokens": sum(s.reserved_tokens for s in states),
            "spent_nanos": [s.spent_nanos for s in states]}


async def _server_version(books) -> str:
    from django.db import connection

    from infra.threads import run_in_db_thread

    def database() -> str:
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                return f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"

    name = await run_in_db_thread(database)
    if books.kind == "redis":
        name = f"Redis {(await books._redis.info('server'))['redis_version']}, {name}"
    return name


def run_variant(variant: str, args) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
    import django

    django.setup()
    from django.db import connection

    org_id, key_id, rules = _fixtures(variant)
    connection.close()  # this thread's; the ledger uses its own threads
    return asyncio.run(_measure(variant, org_id, key_id, rules, args))


# --- the run: services, databases, one subprocess per variant ---------------------------------

def _postgres_url(server_url: str) -> str:
    parsed = urlparse(server_url)
    if not parsed.scheme.startswith("postgres"):
        raise SystemExit(f"not a PostgreSQL URL: {server_url}")
    return urlunparse(parsed._replace(path=f"/{DATABASE_NAME}"))


def _redis_db(url: str) -> int:
    return int(urlparse(url).path.lstrip("/") or 0)


def _prepare_postgres(url: str) -> str | None:
    """Drop and recreate the benchmark's own database (migrated later). None when it works."""
    from tests.support.stack import recreate_pg_database

    if urlparse(url).path.lstrip("/") in NEVER_TOUCH_DATABASES:
        raise SystemExit(f"refusing to touch {url}")
    try:
        recreate_pg_database(url, DATABASE_NAME)
    except Exception as exc:  # noqa: BLE001 - reported, the variant is skipped
        return f"PostgreSQL not available ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    return None


def _prepare_redis(url: str) -> str | None:
    import redis

    if _redis_db(url) in NEVER_FLUSH_REDIS_DBS:
        raise SystemExit(f"refusing to flush Redis database {_redis_db(url)} ({url})")
    try:
        client = redis.from_url(url, socket_timeout=5)
        client.flushdb()  # this database only
        client.close()
    except Exception as exc:  # noqa: BLE001
        return f"Redis not available ({type(exc).__name__}: {exc})"
    return None


def _variant_env(variant: str, pg_url: str, redis_url: str, data_dir: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "OPENCLAW_DATA_DIR")}
    env.update(DJANGO_SETTINGS_MODULE="openclaw_site.settings", OPENCLAW_DATA_DIR=data_dir, PYTHONUNBUFFERED="1",
               LITELLM_LOCAL_MODEL_COST_MAP="True")
    if VARIANTS[variant][1]:
        env["DATABASE_URL"] = pg_url
    if VARIANTS[variant][2]:
        env["REDIS_URL"] = redis_url
    return env


def run_all(args) -> dict:
    """Every variant, each in a subprocess; returns what render() needs."""
    machine = report.machine()
    started = time.monotonic()
    pg_url = _postgres_url(args.postgres)
    skipped: dict[str, str] = {}
    pg_problem = _prepare_postgres(pg_url) if any(VARIANTS[v][1] for v in args.variants) else None
    redis_problem = _prepare_redis(args.redis) if "redis" in args.variants else None
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="openclaw-bench-budget-") as tmp:
        migrated_pg = False
        for variant in args.variants:
            _label, needs_pg, needs_redis = VARIANTS[variant]
            problem = (pg_problem if needs_pg else None) or (redis_problem if needs_redis else None)
            if problem:
                skipped[variant] = problem
                say(f"{variant}: skipped, {problem}")
                continue
            data_dir = os.path.join(tmp, variant)
            os.makedirs(data_dir)
            env = _variant_env(variant, pg_url, args.redis, data_dir)
            if not needs_pg or not migrated_pg:
                say(f"{variant}: migrating {'PostgreSQL ' + DATABASE_NAME if needs_pg else 'a fresh SQLite file'}")
                report.migrate(env)
                migrated_pg = migrated_pg or needs_pg
            say(f"{variant}: running")
            done = subprocess.run(
                [sys.executable, "-m", "bench.budget_ledger", "--variant", variant,
                 "--iterations", str(args.iterations), "--warm-up", str(args.warm_up),
                 "--concurrency", str(args.concurrency),
                 "--concurrent-ops", str(args.concurrent_ops)],
                cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True, timeout=1800)
            if done.returncode != 0:
                skipped[variant] = f"failed (exit {done.returncode}); see the log above"
                continue
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    machine["load_after"] = report.loadavg()
    machine["duration_s"] = time.monotonic() - started
    machine["versions"] = ", ".join(f"{p} {version(p)}" for p in ("Django", "redis", "psycopg"))
    return {"machine": machine, "results": results, "skipped": skipped, "args": vars(args)}


# --- the report -------------------------------------------------------------------------------

def _ms(value: float) -> str:
    return report._f(value, 3) if value < 10 else report._f(value, 1)


def render(run: dict, *, heading: str = "###") -> str:
    m, results, a = run["machine"], run["results"], run["args"]
    servers = "; ".join(f"{v}: {r['server']}" for v, r in results.items())
    lines = [
        f"{heading} Budget reserve + settle", "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores, {m['ram_gib']:.1f} GiB RAM · Linux {m['kernel']} · "
        f"Python {m['python']} · {m['versions']} · {servers} · load average {m['load_before']} before, "
        f"{m['load_after']} after · run took {m['duration_s']:.0f} s", "",
        f"One request's budget step in-process: plan a lease against two budgets (org month, key day), "
        f"reserve, settle (without the usage record). {a['iterations']:,} sequential iterations after "
        f"{a['warm_up']} warm-up; then {a['concurrent_ops']:,} over {a['concurrency']} concurrent tasks.", "",
    ]
    redis = results.get("redis")
    if redis:
        p50 = redis["runs"]["settle_written"]["sequential"]["total"]["p50"]
        verdict = report._met(p50 < TARGET_P50_MS)
        miss = "" if p50 < TARGET_P50_MS else f", {p50 - TARGET_P50_MS:.3f} ms over ({p50 / TARGET_P50_MS:.2f}×)"
        lines += ["| target | measured | result |", "| --- | --- | --- |",
                  f"| Redis reserve + settle < {TARGET_P50_MS:g} ms at p50 | {p50:.3f} ms{miss} | {verdict} |", ""]
    lines += [
        "| ledger | settle | sequential p50 / p95 / p99 ms | reserve p50 ms | settle p50 ms | sequential per s | "
        f"{a['concurrency']} tasks: per s | {a['concurrency']} tasks: p50 / p99 ms (errors) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, r in results.items():
        for settle, both in r["runs"].items():
            s, c = both["sequential"], both["concurrent"]
            t = s["total"]
            first = (c["first_error"] or "").splitlines()[0].replace("|", "\\|") if c["errors"] else ""
            errors = f"{c['errors']}, first: `{first}`" if c["errors"] else "0"
            lines.append(
                f"| {VARIANTS[variant][0]} | `{settle}` | {_ms(t['p50'])} / {_ms(t['p95'])} / {_ms(t['p99'])} | "
                f"{_ms(s['reserve']['p50'])} | {_ms(s['settle']['p50'])} | {s['per_s']:,.0f} | {c['per_s']:,.0f} | "
                f"{_ms(c['latency']['p50'])} / {_ms(c['latency']['p99'])} ({errors}) |")
    lines += [
        "", "Where the time goes: the benchmark process's CPU per reserve + settle (all its threads), the Redis "
        "server's own time running the ledger's commands (sequential), and one bare round trip.", "",
        "| ledger | settle | CPU ms per op, this process: sequential / "
        f"{a['concurrency']} tasks | Redis server ms per op (commands per op) | "
        "bare round trip p50 / p99 ms | first reserve + settle, cold (ms) | left open after the run: "
        "leases, reserved nanos |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for variant, r in results.items():
        f, left = r["floor"], r["left_over"]
        for settle, both in r["runs"].items():
            s, c = both["sequential"], both["concurrent"]
            server = s.get("redis_server")
            server = f"{server['server_ms_per_op']:.3f} ({server['calls_per_op']:.2f})" if server else "n/a"
            lines.append(f"| {VARIANTS[variant][0]} | `{settle}` | {s['cpu_ms_per_op']:.2f} / "
                         f"{c['cpu_ms_per_op']:.2f} | {server} | {f['name']}: {_ms(f['p50'])} / {_ms(f['p99'])} | "
                         f"{r['first_ms']:,.1f} | "
                         f"{left['leases']}, {left['reserved_nanos']} |")
    for variant, problem in run["skipped"].items():
        lines += ["", f"{variant}: skipped: {problem}"]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.budget_ledger", description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=ITERATIONS, help="sequential reserve + settle, measured")
    parser.add_argument("--warm-up", type=int, default=WARM_UP, help="sequential iterations before measuring")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="concurrent tasks")
    parser.add_argument("--concurrent-ops", type=int, default=CONCURRENT_OPS, help="reserve + settle over the tasks")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--postgres", default=os.environ.get("DATABASE_URL", "").startswith("postgres")
                        and os.environ["DATABASE_URL"] or POSTGRES_SERVER,
                        help=f"a PostgreSQL server (default: DATABASE_URL's, else {POSTGRES_SERVER}); "
                             f"the database used is always {DATABASE_NAME}")
    parser.add_argument("--redis", default=REDIS_URL, help="the Redis database to flush and use (default db 9)")
    parser.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # one variant, JSON out
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return 0
    print(render(run_all(args), heading="##"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
