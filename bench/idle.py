"""Idle authenticated WebSockets on one gateway process: ``python -m bench.idle`` (a few minutes).

Starts a gateway stack (``manage.py serve --processes 1``; PostgreSQL and Redis when
DATABASE_URL / REDIS_URL say so, the embedded SQLite + in-memory layer otherwise), then,
on loopback only:

1. opens ``--connections`` WebSockets (default 15,000), each authenticated with the demo
   key (``auth`` → ``auth_ok``), at most ``--batch`` handshakes under way at once in each of
   ``--clients`` client processes
   (default: one per 10,000 connections), each with its own source address (127.0.0.1,
   127.0.0.2, ...) so no client runs short of ephemeral ports;
2. reads the gateway process's memory before and with them open: RSS from
   /proc/<pid>/status, PSS and USS (private clean + dirty) from /proc/<pid>/smaps_rollup;
3. sends a ``ping`` on every socket at once and counts the ``pong`` frames that come back;
4. closes them all and reads the memory again.

The gateway starts with a soft open-files limit of 1,024 (a common default for a service
or a login shell) and must raise it itself (``openclaw_site/server.py``); the clients raise
their own soft limit to the hard one. One key opens every socket, so the gateway runs with
``OPENCLAW_MAX_CONNECTIONS_PER_KEY`` above ``--connections`` (an operator setting).

``--tracemalloc``: the gateway traces allocations (OPENCLAW_TRACEMALLOC_DIR), and the
biggest growths between a snapshot before and one with the sockets open are printed,
by line and by file. Tracing slows the gateway several times over: use it with a few
thousand connections, not for the memory figures.

Prints a Markdown table for docs/benchmarks.md ("Idle connections at 15,000"); writes nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import resource
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")

CONNECTIONS = 15_000
# Handshakes under way at once per client process. The gateway completes a few dozen a
# second on a busy 2-core machine; daphne rejects a WebSocket not accepted within 5 s
# (--websocket_connect_timeout), so more at once only makes the last of them fail.
BATCH = 50
PER_CLIENT = 10_000  # connections per client process, by default
GATEWAY_SOFT_NOFILE = 1024  # what the gateway starts with; it raises its own limit
PONG_TIMEOUT = 120.0


def say(message: str) -> None:
    print(f"[bench.idle {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the gateway process, from /proc -----------------------------------------------------------

def memory_kib(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + private dirty) of a process, in KiB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)}


def open_files_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise KeyError("Max open files")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_own_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- a client process ----------------------------------------------------------------------------

def client_main(conn, url: str, key: str, source: str, count: int, batch: int) -> None:
    """One client process: opens `count` authenticated sockets from `source`, then obeys
    "ping" and "close" from the pipe; every answer is a dict sent back on it."""
    limit = raise_own_fd_limit()
    if limit < count + 100:
        conn.send({"error": f"client open-files limit {limit} is below {count + 100}; raise the hard limit"})
        return
    asyncio.run(_client(conn, url, key, source, count, batch))


async def _client(conn, url: str, key: str, source: str, count: int, batch: int) -> None:
    from bench.clients import open_authenticated

    loop = asyncio.get_running_loop()
    sockets, failures = [], []
    slots = asyncio.Semaphore(batch)

    async def open_in_turn() -> None:
        async with slots:
            try:
                sockets.append(await open_authenticated(url, key, 60, max_size=2**16, local_addr=(source, 0)))
            except Exception as exc:  # noqa: BLE001 (counted and reported)
                failures.append(exc)

    started = time.perf_counter()
    await asyncio.gather(*(open_in_turn() for _ in range(count)))
    conn.send({"opened": len(sockets), "failed": len(failures), "seconds": time.perf_counter() - started,
               "first_failure": f"{type(failures[0]).__name__}: {failures[0]}"[:300] if failures else None})

    async def ping(ws) -> bool:
        try:
            await ws.send('{"type":"ping"}')
            while True:  # nothing else is expected on an idle socket, but skip anything that is not a pong
                frame = json.loads(await ws.recv())
                if frame.get("type") == "pong":
                    return True
        except Exception:  # noqa: BLE001 (a closed socket is a missing pong)
            return False

    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "ping":
            started = time.perf_counter()
            try:
                answers = await asyncio.wait_for(asyncio.gather(*(ping(ws) for ws in sockets)), PONG_TIMEOUT)
            except asyncio.TimeoutError:
                answers = []
            conn.send({"pongs": sum(answers), "seconds": time.perf_counter() - started})
        elif command == "close":
            for start in range(0, len(sockets), 500):
                await asyncio.gather(*(ws.close() for ws in sockets[start:start + 500]), return_exceptions=True)
            conn.send({"closed": len(sockets)})
            return


class Clients:
    """`n` client processes sharing `total` connections; each answers on its own pipe."""

    def __init__(self, n: int, total: int, url: str, key: str, batch: int):
        context = multiprocessing.get_context("spawn")
        self.pipes, self.processes = [], []
        shares = [total // n + (1 if i < total % n else 0) for i in range(n)]
        for i, share in enumerate(shares):
            parent, child = context.Pipe()
            process = context.Process(target=client_main, args=(child, url, key, f"127.0.0.{i + 1}", share, batch),
                                      daemon=True)
            process.start()
            self.pipes.append(parent)
            self.processes.append(process)

    def answers(self, timeout: float) -> list[dict]:
        out = []
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise RuntimeError(f"a client process did not answer within {timeout:.0f} s")
            answer = pipe.recv()
            if "error" in answer:
                raise RuntimeError(answer["error"])
            out.append(answer)
        return out

    def tell(self, command: str, timeout: float) -> list[dict]:
        for pipe in self.pipes:
            pipe.send(command)
        return self.answers(timeout)

    def stop(self) -> None:
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


# --- tracemalloc snapshots from the gateway ------------------------------------------------------

def snapshot(pid: int, directory: Path, name: str, timeout: float = 120) -> Path:
    """Ask the gateway (SIGUSR2) for a tracemalloc snapshot; the path of the file it writes."""
    before = set(directory.glob("*.tracemalloc"))
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = sorted(set(directory.glob("*.tracemalloc")) - before)
        if new and not new[0].with_suffix(".writing").exists():
            say(f"tracemalloc snapshot {name}: {new[0].name}")
            return new[0]
        time.sleep(0.2)
    raise RuntimeError(f"no tracemalloc snapshot from the gateway within {timeout:.0f} s")


def allocation_growth(before: Path, after: Path, connections: int, top: int = 30) -> str:
    import tracemalloc

    old, new = tracemalloc.Snapshot.load(str(before)), tracemalloc.Snapshot.load(str(after))
    lines = ["", f"tracemalloc: growth with {connections:,} sockets open, bytes per connection", ""]
    for key in ("filename", "lineno"):
        stats = new.compare_to(old, key)
        total = sum(s.size_diff for s in stats)
        lines.append(f"by {key} (all: {total / connections:,.0f} B per connection)")
        for stat in stats[:top]:
            frame = stat.traceback[0]
            where = frame.filename if key == "filename" else f"{frame.filename}:{frame.lineno}"
            where = where.split("site-packages/")[-1].replace(str(Path.cwd()) + "/", "")
            lines.append(f"  {stat.size_diff / connections:9,.0f} B  {stat.count_diff / connections:6.2f} blocks  {where}")
        lines.append("")
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------------

def render(machine: dict, row: dict) -> str:
    kib = lambda v: f"{v / 1024:,.1f}"  # noqa: E731
    per = row["per_connection_kib"]
    lines = [
        f"`python -m bench.idle --connections {row['wanted']}` on {machine['date']}: {machine['cpu']}, "
        f"{machine['cores']} cores, {machine['ram_gib']:.1f} GiB, Python {machine['python']}; "
        f"{machine['database']}, {machine['layer']} channel layer; load average {machine['load_before']} before, "
        f"{machine['load_after']} after; {machine['duration_s']:.0f} s in all; {row['clients']} client "
        f"process(es), at most {row['batch']} handshakes at once each.",
        "",
        "| connections opened (failed) | pongs | open + auth time | gateway CPU per connection | gateway fds (open-files limit) "
        "| RSS / PSS / USS before → open (MiB) | per connection: RSS / PSS / USS (KiB) | RSS after closing (MiB) |",
        "| --- | ---: | ---: | ---: | --- | --- | --- | ---: |",
        f"| {row['opened']:,} of {row['wanted']:,} ({row['failed']}) | {row['pongs']:,} | {row['open_s']:.1f} s "
        f"({row['opened'] / max(row['open_s'], 1e-9):,.0f}/s) | {row['cpu_ms_per_conn']:.1f} ms | "
        f"{row['fds_before']:,} → {row['fds_open']:,} ({row['fd_limit'][0]:,}, started at {GATEWAY_SOFT_NOFILE:,}) | "
        f"{kib(row['before']['rss'])} / {kib(row['before']['pss'])} / {kib(row['before']['uss'])} → "
        f"{kib(row['open']['rss'])} / {kib(row['open']['pss'])} / {kib(row['open']['uss'])} | "
        f"**{per['rss']:.1f}** / {per['pss']:.1f} / {per['uss']:.1f} | {kib(row['closed']['rss'])} |",
    ]
    if row.get("first_failure"):
        lines += ["", f"First failure: `{row['first_failure']}`"]
    return "\n".join(lines) + "\n"


def run(args) -> tuple[dict, str]:
    from bench import report
    from tests.support.stack import Stack

    machine = report.machine()
    started = time.monotonic()
    wanted = args.connections
    clients_n = args.clients or max(1, math.ceil(wanted / PER_CLIENT))
    extra = ""
    with tempfile.TemporaryDirectory(prefix="openclaw-bench-idle-") as tmp:
        os.environ["OPENCLAW_DATA_DIR"] = tmp
        trace_dir = Path(tmp) / "tracemalloc"
        env = {"OPENCLAW_MAX_CONNECTIONS_PER_KEY": str(wanted + 1000)}
        if args.tracemalloc:
            trace_dir.mkdir()
            env["OPENCLAW_TRACEMALLOC_DIR"] = str(trace_dir)
        # No request reaches an upstream: the demo deployment's address is never called.
        stack = Stack(Path(tmp), mock_api_base="http://127.0.0.1:9/v1", name="bench_idle")
        try:
            say("preparing the database")
            stack.prepare()
            # The gateway inherits this process's limits: start it with a common default soft limit.
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(GATEWAY_SOFT_NOFILE, hard), hard))
            try:
                port = stack.start_gateway(processes=1, **env)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            pid = dict(stack.processes)[f"gateway:{port}"].pid
            fd_limit = open_files_limit(pid)
            say(f"gateway pid {pid}, open-files limit {fd_limit[0]} (hard {fd_limit[1]})")
            if fd_limit[0] < wanted + 100:
                say(f"warning: the gateway can hold about {fd_limit[0] - 100} sockets, fewer than {wanted}")
            url = stack.url(port)
            # Warm-up: a few sockets opened, pinged and closed, so first-use work is not counted.
            warm = Clients(1, min(100, wanted), url, stack.api_key, args.batch)
            try:
                warm.answers(120)
                warm.tell("ping", PONG_TIMEOUT + 30)
                warm.tell("close", 60)
            finally:
                warm.stop()
            time.sleep(2)
            before, fds_before = memory_kib(pid), fd_count(pid)
            snap_before = snapshot(pid, trace_dir, "before") if args.tracemalloc else None
            say(f"opening {wanted:,} authenticated connections from {clients_n} client process(es), "
                f"at most {args.batch} handshakes at once each")
            cpu0, t0 = cpu_seconds(pid), time.perf_counter()
            clients = Clients(clients_n, wanted, url, stack.api_key, args.batch)
            try:
                opened = clients.answers(args.timeout)
                open_s, open_cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
                n_open = sum(a["opened"] for a in opened)
                say(f"{n_open:,} open, {sum(a['failed'] for a in opened)} failed, {open_s:.1f} s; settling")
                time.sleep(3)
                mem_open, fds_open = memory_kib(pid), fd_count(pid)
                if args.tracemalloc:
                    extra = allocation_growth(snap_before, snapshot(pid, trace_dir, "open"), max(1, n_open))
                say("a ping on every socket")
                pinged = clients.tell("ping", PONG_TIMEOUT + 30)
                pongs = sum(a["pongs"] for a in pinged)
                say(f"{pongs:,} pongs in {max(a['seconds'] for a in pinged):.1f} s; closing")
                clients.tell("close", 120)
            finally:
                clients.stop()
            time.sleep(3)
            closed = memory_kib(pid)
        finally:
            stack.stop()
    machine["load_after"] = report.loadavg()
    machine["duration_s"] = time.monotonic() - started
    machine["database"] = "PostgreSQL" if stack.pg_url else "SQLite"
    machine["layer"] = "Redis" if os.environ.get("REDIS_URL") else "in-memory"
    n = max(1, n_open)
    row = {
        "wanted": wanted, "clients": clients_n, "batch": args.batch, "opened": n_open,
        "failed": sum(a["failed"] for a in opened),
        "first_failure": next((a["first_failure"] for a in opened if a["first_failure"]), None),
        "pongs": pongs, "open_s": open_s, "cpu_ms_per_conn": open_cpu * 1000 / n,
        "fd_limit": fd_limit, "fds_before": fds_before, "fds_open": fds_open,
        "before": before, "open": mem_open, "closed": closed,
        "per_connection_kib": {k: (mem_open[k] - before[k]) / n for k in before},
    }
    return {"machine": machine, "row": row}, render(machine, row) + extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help=f"sockets to open (default {CONNECTIONS:,})")
    parser.add_argument("--clients", type=int, default=0,
                        help=f"client processes (default: one per {PER_CLIENT:,} connections)")
    parser.add_argument("--batch", type=int, default=BATCH, help=f"handshakes under way at once per client process (default {BATCH})")
    parser.add_argument("--timeout", type=float, default=600, help="seconds allowed for opening them all (default 600)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="trace the gateway's allocations and print where the growth is (slow)")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.batch < 1 or args.clients < 0 or args.clients > 250:
        parser.error("--connections and --batch must be 1 or more, --clients 0 to 250")
    # A SIGTERM (timeout, a stopped job) unwinds like an error: the stack is stopped, its database dropped.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    figures, text = run(args)
    print(text)
    if args.json:
        print(json.dumps(figures, indent=1, default=str))
    row = figures["row"]
    return 0 if row["opened"] == row["wanted"] and row["pongs"] == row["opened"] else 1


if __name__ == "__main__":
    sys.exit(main())
