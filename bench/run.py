"""The gateway's benchmark: ``python -m bench.run`` (``make bench``), one run, a few minutes.

What it does, on loopback, with everything started fresh (mock LLM, SQLite stack, one daphne):

1. Streams the same completion (mock: ``ttft_ms=20``, 100 tokens/s per stream, 100 tokens)
   four ways, each warmed up first, at 1 stream (30 sequential requests) and at 50
   concurrent streams (4 sequential requests each):
   a. ``mock HTTP`` — aiohttp straight to the mock (the floor: no litellm, no gateway);
   b. ``litellm`` — ``litellm.acompletion(stream=True)`` in this process, as the gateway calls it;
   c. ``gateway`` — WebSocket to the daphne process: auth, routing, token counting, litellm,
      frames, usage record written for every request; ``model`` names one deployment;
   d. ``gateway (route)`` — the same gateway process and client, but ``model`` is a route's alias
      (``bench-route``: latency strategy over three deployments, all on the same mock with the
      same directives, the same litellm model string as (c)); the gateway's routing policies,
      strategy and health bookkeeping run for every request. Compared with (c), that is what
      routing costs end to end.
2. Against the peer, on a zero-delay upstream (mock: ``ttft_ms=0``, ``rate=0`` = no pacing, 50
   tokens), where each path's own CPU cost shows: (a), (b), (c) and
   e. ``LiteLLM Proxy`` — ``litellm --config … --num_workers N`` (N = the gateway's process
      count, 1), started by the benchmark from its own virtual environment (var/bench-peer,
      installed by ``make bench`` from the hash-pinned bench/peer-requirements.txt), with one
      model on the same mock, streamed by the (a) client over HTTP SSE;
   at 1 stream (200 sequential requests) and 50 concurrent streams (4 each). The issue-14
   ratios are computed from these rows: gateway TTFT against litellm + 1 ms and against the
   proxy at 1 stream; gateway tokens/s ÷ the proxy's (≥ 2×) and TTFT p99 at 50 streams. Both
   runs also compare the gateway's own ``latency_ms.first_token`` (end frame) with the TTFT its
   client observed. Without the proxy's environment (or if it fails to start) the rows run
   without it and the report says why.
3. Idle authenticated WebSockets held by the one gateway process, and its memory per connection.
4. One request's budget step, reserve + settle, in-process (``bench.budget_ledger``, which also
   runs alone: ``python -m bench.budget_ledger``).
5. One request's routing decision, in-process (``bench.routing_decision``, which also runs
   alone: ``python -m bench.routing_decision``): end-to-end noise is far larger than the
   decision itself, so it is timed directly.
6. Prompt truncation, in-process (``bench.truncation``, which also runs alone:
   ``python -m bench.truncation``): 3,000 tiny messages into an 8k context, the old quadratic
   algorithm (the baseline, about 100 s of CPU) against the gateway's, and one org's burst of
   them beside another org's count.

``--quick`` checks that everything runs, in about two minutes: fewer requests and
streams, the peer only if its environment exists, 200 idle connections, a shorter routing-decision run, no budget ledger, truncation
of 1,000 messages; it prints
only (docs/benchmarks.md is left alone) and its numbers are not the benchmark's.

How to read the numbers:

- TTFT is measured by the client, from sending the request to receiving the first content
  token; it includes the mock's own ``ttft_ms`` (20 ms), so compare paths, not absolutes.
  "Overhead" is gateway p50 minus litellm p50 (what the gateway adds to calling litellm).
- tokens/s is every content token received in a phase divided by the phase's wall time (the
  first request sent to the last one finished). At 1 stream it is bounded by the mock's pace
  (≈ 95 tok/s); at 50 streams the mock could send 5,000 tok/s, so the figure is the CPU
  capacity of the path on this machine (litellm spends about a millisecond of CPU per chunk),
  and TTFT at 50 streams is mostly queueing for that CPU: the TTFT target is judged at 1 stream.
- CPU ms per 1,000 tokens comes from /proc/<pid>/stat (user + system, all threads) read just
  before and after the timed part: the gateway's own process for (c) and (d), this process for (a)
  and (b) (the client, and for (b) litellm itself). The mock's CPU is given in cores so you
  can check it was never the bottleneck.
- "Where the time goes" lines the client's clock up with the mock's own records (same
  machine): client → mock is everything before the upstream request arrives (for the
  gateway: frame parsing, key, routing, prompt token counting, litellm's request set-up);
  mock → client is the way back of the first chunk.
- ``gateway (route)`` − ``gateway`` is what routing costs end to end; the decision itself is
  tens of microseconds (item 4), far below the run-to-run spread, so a difference there
  means something only if it holds across runs.
- The gateway's ``latency_ms.first_token`` is whole milliseconds (truncated) from the start of
  ``serve_request``; the client's TTFT minus it is the time spent outside the request pipeline
  (daphne, channels, the consumer, the socket, both ways), about 0.5 ms overstated on average.
- The machine is shared: the load average before and after is in the report; rerun before
  trusting a small difference. Targets are reported as met or not met, never enforced.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench import budget_ledger, peer, report, routing_decision, truncation  # noqa: E402
from bench.clients import (  # noqa: E402
    MODEL, MockSettings, PhaseResult, cpu_seconds, gateway_path, group_cpu_seconds, litellm_path, mock_http_path,
    mock_http_session, open_authenticated, run_phase,
)
from tests.support.mockllm import MockLLMProcess  # noqa: E402
from tests.support.routes import configure  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

# 100 tok/s per stream: 50 streams of the bare mock path keep the mock well under half a core.
MOCK = MockSettings(ttft_ms=20, rate=100, tokens=100)
LEVELS = [(1, 30), (50, 4)]  # (concurrent streams, sequential requests per stream)
WARM_UP = [(1, 3), (10, 1)]  # the same, before measuring each path
PATHS = ["mock HTTP", "litellm", "gateway", "gateway (route)"]
GATEWAY_PATHS = ["gateway", "gateway (route)"]
TAGS = {"mock HTTP": "mock", "litellm": "litellm", "gateway": "gateway", "gateway (route)": "route",
        "LiteLLM Proxy": "peer"}  # mock tags
# Against the peer: a zero-delay upstream (no first-token wait, no pacing), so what each path
# costs in CPU shows at every level (the paced mock makes every path equal at 1 stream).
MOCK_FAST = MockSettings(ttft_ms=0, rate=0, tokens=50)
FAST_LEVELS = [(1, 200), (50, 4)]
FAST_WARM_UP = [(1, 5), (10, 2)]
PEER = "LiteLLM Proxy"
FAST_PATHS = ["mock HTTP", "litellm", "gateway", PEER]
GATEWAY_PROCESSES = 1  # the gateway row's processes; the proxy gets as many workers by default
CONNECTIONS = 5000
CONNECT_BATCH = 200  # connections opened at once (no SYN flood)
# The routed path: a route over three deployments on the same mock, latency strategy.
ROUTE_ALIAS = "bench-route"
ROUTE_STRATEGY = "latency"
ROUTE_DEPLOYMENTS = ["bench-route-a", "bench-route-b", "bench-route-c"]
# --quick: does everything run? (not the benchmark's numbers)
QUICK_LEVELS = [(1, 10), (10, 2)]
QUICK_WARM_UP = [(1, 2), (5, 1)]
QUICK_FAST_LEVELS = [(1, 20), (10, 2)]
QUICK_FAST_WARM_UP = [(1, 2), (5, 1)]
QUICK_CONNECTIONS = 200
QUICK_ROUTING = ["--iterations", "2000", "--warm-up", "200", "--cold-iterations", "50", "--bursts", "1"]


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; the gateway subprocess inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def open_files_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise KeyError("Max open files")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- streaming ------------------------------------------------------------------------------

async def streaming(mock: MockLLMProcess, paths: dict, pids: dict, *, settings: MockSettings, levels, warm_up,
                    prefix: str = "") -> dict:
    """Every path warmed up, then each level run path after path; {(path, streams): summary}."""
    results: dict[tuple[str, int], dict] = {}
    for name, slot in paths.items():  # litellm's first call is slow; daphne's and the proxy's too
        say(f"warming up {name}")
        for streams, per_stream in warm_up:
            warm = await run_phase(slot, streams=streams, per_stream=per_stream, tag=f"{prefix}warm", pids={})
            if warm.errors:
                error = peer.PeerError if name == PEER else RuntimeError
                raise error(f"{name} fails while warming up: {next(s.error for s in warm.samples if s.error)}")
    for streams, per_stream in levels:
        for name, slot in paths.items():
            mock.clear()
            phase = await run_phase(slot, streams=streams, per_stream=per_stream,
                                    tag=f"{prefix}{TAGS[name]}{streams}", pids=pids)
            results[(name, streams)] = r = summarize(phase, mock.events(), settings)
            say(f"{name:15} {streams:2} streams: TTFT p50 {r['ttft_p50']:.1f} ms, p99 {r['ttft_p99']:.1f} ms, "
                f"{r['tokens_per_s']:.0f} tok/s, {r['errors']} errors, mock {r['mock_cores']:.2f} cores")
    return results


async def streaming_rows(mock: MockLLMProcess, stack: Stack, gateway_pid: int, *, settings: MockSettings, levels,
                         warm_up, route: str | None = None, proxy: peer.LiteLLMProxy | None = None,
                         tag_prefix: str = "") -> dict:
    """One streaming table's rows: mock HTTP, litellm and the gateway on the mock with `settings`,
    then the gateway asked for the alias `route` (item 1) and LiteLLM Proxy when `proxy` runs (item 2)."""
    pids = {"mock": mock.proc.pid, "gateway": gateway_pid, "bench": os.getpid()}
    async with mock_http_session() as session:
        paths = {
            "mock HTTP": mock_http_path(session, mock.api_base, settings),
            "litellm": litellm_path(mock.api_base, settings),
            "gateway": gateway_path(stack.url(), stack.api_key, settings),
        }
        if route is not None:
            paths["gateway (route)"] = gateway_path(stack.url(), stack.api_key, settings, model=route)
        if proxy is not None:
            paths[PEER] = mock_http_path(session, proxy.api_base, settings, api_key=proxy.master_key)
            pgid = proxy.pgid
            pids["peer"] = lambda: group_cpu_seconds(pgid)
        return await streaming(mock, paths, pids, settings=settings, levels=levels, warm_up=warm_up,
                               prefix=tag_prefix)


def run_fast(mock: MockLLMProcess, stack: Stack, gateway_pid: int, tmp: Path, *, levels, warm_up,
             peer_workers: int, want_peer: bool) -> tuple[dict, dict]:
    """The zero-delay rows, with LiteLLM Proxy started for them (and stopped, whatever happens)."""
    info = {"workers": peer_workers, "gateway_processes": GATEWAY_PROCESSES, "version": None,
            "reason": None if want_peer else "skipped (--no-peer)"}

    def rows(proxy: peer.LiteLLMProxy | None) -> dict:  # item 2: the zero-delay upstream (MOCK_FAST)
        return asyncio.run(streaming_rows(mock, stack, gateway_pid, settings=MOCK_FAST, levels=levels,
                                          warm_up=warm_up, proxy=proxy, tag_prefix="z"))

    if info["reason"] is None:
        info["reason"] = peer.unavailable_reason()
    if info["reason"] is not None:
        say(f"LiteLLM Proxy row skipped: {info['reason']}")
        return rows(None), info
    info["version"] = peer.version()
    say(f"starting LiteLLM Proxy {info['version']} ({peer_workers} worker{'s' if peer_workers > 1 else ''})")
    try:
        proxy = peer.LiteLLMProxy(model=MODEL, upstream_api_base=mock.api_base, workers=peer_workers, work_dir=tmp)
        with proxy:
            say(f"LiteLLM Proxy ready on port {proxy.port}")
            return rows(proxy), info
    except peer.PeerError as exc:
        info["reason"] = f"it did not run: {exc}"
        say(f"LiteLLM Proxy row dropped: {exc}" + (f"; its log ends:\n{exc.log}" if exc.log else ""))
        return rows(None), info


def define_route(stack: Stack) -> None:
    """The routed path's route: three deployments on the mock, each sending the benchmark's
    directives, with the direct path's litellm model string (so litellm does the same work
    for both paths and only routing differs), under a latency route."""
    directives = f"tokens={MOCK.tokens} rate={MOCK.rate} ttft_ms={MOCK.ttft_ms}"
    configure(stack, deployments=[{"name": name, "directives": directives} for name in ROUTE_DEPLOYMENTS],
              routes=[{"alias": ROUTE_ALIAS, "strategy": ROUTE_STRATEGY, "candidates": ROUTE_DEPLOYMENTS}])
    stack.manage("shell", "-c", (
        "from catalog.models import Deployment; "
        f"Deployment.objects.filter(org=None, name__in={ROUTE_DEPLOYMENTS!r})"
        ".update(litellm_model='openai/gpt-4-turbo', context_window=128_000)"))


def summarize(phase: PhaseResult, mock_events: list[dict], settings: MockSettings = MOCK) -> dict:
    ok = phase.ok
    by_tag = {e["tag"]: e for e in mock_events if e.get("tag")}
    to_mock, in_mock, back = [], [], []
    for s in ok:
        e = by_tag.get(s.tag)
        if e and e.get("received_at") and e.get("first_chunk_at"):
            to_mock.append(e["received_at"] - s.sent_at)
            in_mock.append(e["first_chunk_at"] - e["received_at"])
            back.append(s.first_at - e["first_chunk_at"])
    tokens = phase.tokens
    per_1k = lambda seconds: seconds * 1e6 / tokens if tokens else float("nan")  # noqa: E731
    # The gateway's own first-token time (end frame) against the one its client observed.
    reported = [s for s in ok if s.reported_first_token_ms is not None]
    return {
        "requests": len(phase.samples), "errors": phase.errors,
        "first_error": next((s.error for s in phase.samples if s.error), None),
        "short": sum(1 for s in ok if s.tokens != settings.tokens),
        "ttft_p50": report.pct([s.ttft for s in ok], 50) * 1000,
        "ttft_p99": report.pct([s.ttft for s in ok], 99) * 1000,
        "tokens": tokens, "wall": phase.wall, "tokens_per_s": phase.tokens_per_s,
        "mock_cores": phase.cpu["mock"] / phase.wall,
        "bench_cpu_per_1k": per_1k(phase.cpu["bench"]), "gateway_cpu_per_1k": per_1k(phase.cpu["gateway"]),
        "peer_cpu_per_1k": per_1k(phase.cpu["peer"]) if "peer" in phase.cpu else float("nan"),
        "reported": len(reported),
        "reported_first_token_p50": report.pct([float(s.reported_first_token_ms) for s in reported], 50),
        "client_ttft_of_reported_p50": report.pct([s.ttft * 1000 for s in reported], 50),
        "outside_pipeline_p50": report.pct([s.ttft * 1000 - s.reported_first_token_ms for s in reported], 50),
        "outside_pipeline_p99": report.pct([s.ttft * 1000 - s.reported_first_token_ms for s in reported], 99),
        "to_mock_p50": report.pct(to_mock, 50) * 1000, "in_mock_p50": report.pct(in_mock, 50) * 1000,
        "back_p50": report.pct(back, 50) * 1000,
    }


# --- idle connections -----------------------------------------------------------------------

async def idle_connections(url: str, key: str, pid: int, wanted: int) -> dict:
    limit = open_files_limit(pid)
    count = min(wanted, limit - 200, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 200)
    rss0, fds0 = proc_status_kib(pid, "VmRSS"), fd_count(pid)
    say(f"opening {count} authenticated connections ({CONNECT_BATCH} at a time); gateway fd limit {limit}")
    conns, failures = [], []
    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    for start in range(0, count, CONNECT_BATCH):
        batch = await asyncio.gather(*(open_authenticated(url, key) for _ in range(min(CONNECT_BATCH, count - start))),
                                     return_exceptions=True)
        for item in batch:
            (failures if isinstance(item, BaseException) else conns).append(item)
        if (start + CONNECT_BATCH) % 1000 == 0:
            say(f"  {len(conns)} open, {len(failures)} failed, {time.perf_counter() - t0:.1f} s")
    open_s, open_cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    await asyncio.sleep(2)
    rss1, fds1 = proc_status_kib(pid, "VmRSS"), fd_count(pid)

    async def answers_ping(ws) -> bool:
        try:
            await ws.send('{"type":"ping"}')
            return json.loads(await asyncio.wait_for(ws.recv(), 60)).get("type") == "pong"
        except Exception:  # noqa: BLE001
            return False

    held = sum(await asyncio.gather(*(answers_ping(ws) for ws in conns)))
    say(f"{held} connections answered a ping; closing them")
    for start in range(0, len(conns), 500):
        await asyncio.gather(*(ws.close() for ws in conns[start:start + 500]), return_exceptions=True)
    await asyncio.sleep(2)
    return {
        "attempted": count, "opened": len(conns), "held": held, "failed": len(failures),
        "first_failure": f"{type(failures[0]).__name__}: {failures[0]}"[:200] if failures else None,
        "open_s": open_s, "cpu_ms_per_conn": open_cpu * 1000 / max(1, count),
        "fd_limit": limit, "fds_before": fds0, "fds_after": fds1,
        "rss_before_kib": rss0, "rss_after_kib": rss1, "rss_closed_kib": proc_status_kib(pid, "VmRSS"),
        "kib_per_conn": (rss1 - rss0) / len(conns) if conns else float("nan"),
    }


# --- the run --------------------------------------------------------------------------------

def usage_records(stack: Stack, expected: int) -> dict[str, int]:
    deadline = time.monotonic() + 15
    while True:
        rows = dict(stack.query("SELECT status, COUNT(*) FROM billing_usagerecord GROUP BY status"))
        if sum(rows.values()) >= expected or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def routed_to(stack: Stack) -> dict[str, int]:
    """Which deployments served the routed path's requests (warm-up included), from the usage records."""
    return dict(stack.query("SELECT deployment_name, COUNT(*) FROM billing_usagerecord WHERE requested_model = %s "
                            "GROUP BY deployment_name ORDER BY COUNT(*) DESC", (ROUTE_ALIAS,)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="idle connections to open")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--quick", action="store_true",
                        help=f"a check that everything runs: {QUICK_LEVELS} (streams, requests each) after "
                             f"{QUICK_WARM_UP}, {QUICK_CONNECTIONS} connections, a short routing-decision run, "
                             f"no budget ledger, truncation of 1,000 messages, zero-delay rows {QUICK_FAST_LEVELS} "
                             "(the peer only if installed); print only")
    parser.add_argument("--peer-workers", type=int, default=GATEWAY_PROCESSES, metavar="N",
                        help="LiteLLM Proxy's --num_workers (default: the gateway row's process count, "
                             f"{GATEWAY_PROCESSES})")
    parser.add_argument("--no-peer", action="store_true", help="leave LiteLLM Proxy out of the zero-delay rows")
    args = parser.parse_args(argv)
    if args.peer_workers < 1:
        parser.error("--peer-workers must be at least 1")
    levels, warm_up = (QUICK_LEVELS, QUICK_WARM_UP) if args.quick else (LEVELS, WARM_UP)
    fast_levels, fast_warm_up = (QUICK_FAST_LEVELS, QUICK_FAST_WARM_UP) if args.quick else (FAST_LEVELS, FAST_WARM_UP)
    connections = min(args.connections, QUICK_CONNECTIONS) if args.quick else args.connections

    raise_fd_limit()  # before the gateway starts: it inherits the limit
    machine = report.machine()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="openclaw-bench-") as tmp:
        os.environ["OPENCLAW_DATA_DIR"] = tmp  # before Django settings are first read
        say("starting the mock LLM and the gateway")
        with MockLLMProcess(rate=MOCK.rate, ttft_ms=MOCK.ttft_ms, default_tokens=MOCK.tokens) as mock:
            stack = Stack(Path(tmp), mock_api_base=mock.api_base, name="bench")
            try:
                stack.prepare()
                say(f"defining the route {ROUTE_ALIAS} ({ROUTE_STRATEGY}) over {len(ROUTE_DEPLOYMENTS)} deployments")
                define_route(stack)
                # One key opens every connection: lift the per-key cap (an operator setting)
                # so the process's own capacity is what gets measured.
                stack.start_gateway(OPENCLAW_MAX_CONNECTIONS_PER_KEY=str(connections + 100))
                gateway_pid = stack.processes[0][1].pid
                stream_results = asyncio.run(streaming_rows(
                    mock, stack, gateway_pid, settings=MOCK, levels=levels, warm_up=warm_up, route=ROUTE_ALIAS))
                say(f"zero-delay upstream (ttft_ms={MOCK_FAST.ttft_ms}, rate={MOCK_FAST.rate}, "
                    f"{MOCK_FAST.tokens} tokens): {', '.join(FAST_PATHS)}")
                fast_results, peer_info = run_fast(mock, stack, gateway_pid, Path(tmp), levels=fast_levels,
                                                   warm_up=fast_warm_up, peer_workers=args.peer_workers,
                                                   want_peer=not args.no_peer)
                gateway_requests = (len(GATEWAY_PATHS) * sum(s * n for s, n in warm_up + levels)
                                    + sum(s * n for s, n in fast_warm_up + fast_levels))
                usage = usage_records(stack, gateway_requests)
                route_usage = routed_to(stack)
                conn_results = asyncio.run(idle_connections(stack.url(), stack.api_key, gateway_pid, connections))
            finally:
                stack.stop()
    machine["load_after"] = report.loadavg()
    machine["database"] = "PostgreSQL" if stack.pg_url else "SQLite"
    machine["layer"] = "Redis" if os.environ.get("REDIS_URL") else "in-memory"
    machine["duration_s"] = time.monotonic() - started
    say("routing decision: python -m bench.routing_decision")
    routing = routing_decision.run_all(routing_decision.parse(QUICK_ROUTING if args.quick else []))
    if args.quick:
        budget = "### Budget reserve + settle\n\nSkipped (--quick).\n"
    else:
        say("budget reserve + settle: python -m bench.budget_ledger")
        budget = budget_ledger.render(budget_ledger.run_all(budget_ledger.parse([])))
    say("prompt truncation: python -m bench.truncation")
    truncating = truncation.render(truncation.run_all(truncation.parse(["--quick"] if args.quick else [])))
    route = {"alias": ROUTE_ALIAS, "strategy": ROUTE_STRATEGY, "deployments": ROUTE_DEPLOYMENTS, "served": route_usage}
    text = (report.render(machine=machine, mock=MOCK, levels=levels, paths=PATHS, streams=stream_results,
                          usage=usage, gateway_requests=gateway_requests, conns=conn_results, route=route,
                          routing=routing, quick=args.quick,
                          fast={"mock": MOCK_FAST, "levels": fast_levels, "streams": fast_results, "peer": peer_info,
                                "paths": [p for p in FAST_PATHS if (p, fast_levels[0][0]) in fast_results]})
            + "\n" + routing_decision.render(routing) + "\n" + budget + "\n" + truncating)
    print(text)
    for line in report.peer_verdicts(fast_results, fast_levels, peer_info):
        say(line)
    if not args.no_docs and not args.quick:
        report.write_docs(text)
        say("wrote docs/benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
