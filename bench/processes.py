"""One gateway process against N on one port: ``python -m bench.processes`` (about a minute).

``manage.py serve --processes 1``, then ``--processes N`` (default 2), each on its own,
against the same zero-delay mock LLM (50 tokens per completion, no pacing, no time to first
token), with PostgreSQL and Redis (required: several processes need the shared channel
layer; the org has no budget). For each: 50 concurrent WebSocket streams, one warm-up
request each, then ``--requests`` sequential requests each, timed. Loopback only.

Reported per row: tokens/s (every content token received ÷ the timed phase's wall time),
TTFT p50 / p99 as the client sees it, errors, and the CPU seconds each gateway process, this
client and the mock spent in the timed phase (/proc/<pid>/stat). The client, the mock,
PostgreSQL and Redis share the machine's cores with the gateway processes, so N processes
reach N× only on a machine with cores to spare; the CPU columns say where the time went.
Prints a Markdown section for docs/benchmarks.md ("Processes on one port"); writes nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from bench import report  # noqa: E402
from bench.clients import MockSettings, PhaseResult, gateway_path, run_phase  # noqa: E402
from tests.support.mockllm import MockLLMProcess  # noqa: E402
from tests.support.stack import Stack  # noqa: E402

MOCK = MockSettings(ttft_ms=0, rate=0, tokens=50)
STREAMS = 50
REQUESTS = 4


def say(message: str) -> None:
    print(f"[bench.processes {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def server_pids(stack: Stack, port: int, processes: int) -> list[int]:
    if processes == 1:  # `serve` execs the server itself
        return [dict(stack.processes)[f"gateway:{port}"].pid]
    found = dict(re.findall(r"gateway process (\d+) started \(pid (\d+)\)", stack.log(port)))
    return [int(pid) for pid in found.values()]


def stop_gateway(stack: Stack, port: int) -> int | None:
    name = f"gateway:{port}"
    process = dict(stack.processes)[name]
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    stack.processes = [(n, p) for n, p in stack.processes if n != name]
    return code


def measure(stack: Stack, mock: MockLLMProcess, processes: int, requests: int) -> dict:
    say(f"serve --processes {processes}: starting")
    port = stack.start_gateway(processes=processes, OPENCLAW_MAX_CONNECTIONS_PER_KEY=str(STREAMS * 4))
    try:
        pids = server_pids(stack, port, processes)
        slot = gateway_path(stack.url(port), stack.api_key, MOCK)
        watched = {**{f"gateway {i + 1}": pid for i, pid in enumerate(pids)}, "client": os.getpid(),
                   "mock": mock.proc.pid}
        asyncio.run(run_phase(slot, streams=STREAMS, per_stream=1, tag=f"warm{processes}", pids={}))
        say(f"serve --processes {processes}: {STREAMS} streams x {requests} requests")
        result: PhaseResult = asyncio.run(run_phase(slot, streams=STREAMS, per_stream=requests,
                                                    tag=f"p{processes}", pids=watched))
    finally:
        code = stop_gateway(stack, port)
    ttfts = [s.ttft * 1000 for s in result.ok]
    return {"processes": processes, "tokens_per_s": result.tokens_per_s, "tokens": result.tokens,
            "wall": result.wall, "errors": result.errors, "requests": len(result.samples),
            "ttft_p50": report.pct(ttfts, 50) if ttfts else float("nan"),
            "ttft_p99": report.pct(ttfts, 99) if ttfts else float("nan"),
            "cpu": result.cpu, "exit_code": code, "first_error": next((s.error for s in result.samples if s.error), None)}


def render(machine: dict, rows: list[dict], requests: int) -> str:
    lines = [
        "### Recorded run",
        "",
        f"`python -m bench.processes` on {machine['date']}: {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['ram_gib']:.1f} GiB, Python {machine['python']}; PostgreSQL and Redis on the same machine; "
        f"load average {machine['load_before']} before, {machine['load_after']} after; "
        f"{machine['duration_s']:.0f} s in all. {STREAMS} streams × {requests} requests of {MOCK.tokens} tokens "
        "(zero-delay mock) per row.",
        "",
        "| `serve` | tokens/s | TTFT p50 (ms) | TTFT p99 (ms) | errors | CPU s: gateway processes | CPU s: client / mock |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        gateways = " + ".join(f"{v:.1f}" for k, v in row["cpu"].items() if k.startswith("gateway"))
        lines.append(
            f"| `--processes {row['processes']}` | {row['tokens_per_s']:,.0f} | {row['ttft_p50']:,.1f} | "
            f"{row['ttft_p99']:,.1f} | {row['errors']} | {gateways} (of {row['wall']:.1f} s wall) | "
            f"{row['cpu']['client']:.1f} / {row['cpu']['mock']:.1f} |")
    if len(rows) > 1 and rows[0]["tokens_per_s"]:
        lines += ["", f"{rows[-1]['processes']} processes ÷ 1: **{rows[-1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}×** "
                      "tokens/s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.processes", description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="the N compared with 1 (default 2)")
    parser.add_argument("--requests", type=int, default=REQUESTS, help="sequential requests per stream, timed")
    args = parser.parse_args(argv)
    if args.processes < 2 or args.requests < 1:
        parser.error("--processes must be 2 or more and --requests 1 or more")
    if not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        print("bench.processes needs PostgreSQL and Redis: set DATABASE_URL=postgres://… and REDIS_URL=redis://… "
              "(several gateway processes share the channel layer through Redis)", file=sys.stderr)
        return 2
    machine = report.machine()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="openclaw-bench-processes-") as tmp:
        os.environ["OPENCLAW_DATA_DIR"] = tmp
        say("starting the mock LLM and preparing the database")
        with MockLLMProcess(rate=MOCK.rate, ttft_ms=MOCK.ttft_ms, default_tokens=MOCK.tokens) as mock:
            stack = Stack(Path(tmp), mock_api_base=mock.api_base, name="bench_processes")
            try:
                stack.prepare()
                rows = [measure(stack, mock, n, args.requests) for n in (1, args.processes)]
            finally:
                stack.stop()
    machine["load_after"] = report.loadavg()
    machine["duration_s"] = time.monotonic() - started
    for row in rows:
        if row["errors"] or row["exit_code"] != 0:
            say(f"--processes {row['processes']}: {row['errors']} errors (first: {row['first_error']}), "
                f"exit code {row['exit_code']}")
    print(render(machine, rows, args.requests))
    return 0 if all(not r["errors"] and r["exit_code"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
