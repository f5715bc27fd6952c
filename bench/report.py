"""The benchmark's Markdown report, and the "latest run" section of docs/benchmarks.md."""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
MARKER = "<!-- latest run: everything below this line is rewritten by `make bench` -->"

# The targets from the issue.
TTFT_OVERHEAD_MS = 2.0
THROUGHPUT_RATIO = 0.90
# Issue 14's, against litellm in-process and LiteLLM Proxy on the zero-delay upstream.
PEER_TTFT_MARGIN_MS = 1.0   # 1 stream: gateway TTFT p50 at most litellm's + this
PEER_THROUGHPUT_RATIO = 2.0  # most streams: gateway tokens/s at least this × the proxy's
PEER = "LiteLLM Proxy"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, linearly interpolated (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(samples: list[float]) -> dict:
    """p50 / p95 / p99 / max and the count of a list of timings."""
    return {"p50": pct(samples, 50), "p95": pct(samples, 95), "p99": pct(samples, 99),
            "max": max(samples) if samples else float("nan"), "n": len(samples)}


def migrate(env: dict[str, str]) -> None:
    """Migrate the database `env` points at (a benchmark's own, fresh one)."""
    done = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=DOCS.parents[1],
                          env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine() -> dict:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "ram_gib": mem_kib / 2**20,
        "python": platform.python_version(), "kernel": platform.release(),
        "versions": ", ".join(f"{p} {version(p)}" for p in ("litellm", "daphne", "channels", "Django", "websockets")),
        "load_before": loadavg(),
    }


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else "**met**" if ok else "**not met**"


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _f(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def render(*, machine: dict, mock, levels, paths, streams: dict, usage: dict, gateway_requests: int,
           conns: dict, route: dict | None = None, routing: dict | None = None, quick: bool = False,
           fast: dict | None = None) -> str:
    m = machine
    lines = [
        "## Latest run" + (" (--quick: a check that it runs, not the benchmark's numbers)" if quick else ""), "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores, {m['ram_gib']:.1f} GiB RAM · Linux {m['kernel']} · "
        f"Python {m['python']} · {m['versions']} · database {m['database']}, {m['layer']} channel layer · "
        f"load average {m['load_before']} before, {m['load_after']} after · run took {m['duration_s']:.0f} s", "",
        f"Mock LLM: first token after {mock.ttft_ms} ms, {mock.rate} tokens/s per stream, {mock.tokens} tokens "
        f"per request. " + ", ".join(f"{s} stream{'s' if s > 1 else ''} × {n} sequential requests"
                                      for s, n in levels) + ", after a warm-up of every path.", "",
        "### Against the targets", "",
        "| target | measured | result |", "| --- | --- | --- |",
    ]
    s_min, s_max = levels[0][0], levels[-1][0]
    g, l = streams[("gateway", s_min)], streams[("litellm", s_min)]
    over = g["ttft_p50"] - l["ttft_p50"]
    lines.append(f"| TTFT overhead over direct litellm < {TTFT_OVERHEAD_MS:g} ms at p50 ({s_min} stream) | "
                 f"{_f(over)} ms (gateway {_f(g['ttft_p50'])} − litellm {_f(l['ttft_p50'])}) | "
                 f"{_met(over < TTFT_OVERHEAD_MS)} |")
    g, l = streams[("gateway", s_max)], streams[("litellm", s_max)]
    ratio = _ratio(g["tokens_per_s"], l["tokens_per_s"])
    lines += [
        f"| {s_max} streams: ≥ {THROUGHPUT_RATIO:.0%} of direct litellm's tokens/s | {ratio:.0%} "
        f"({_f(g['tokens_per_s'], 0)} vs {_f(l['tokens_per_s'], 0)} tok/s) | {_met(ratio >= THROUGHPUT_RATIO)} |",
    ]
    if routing is not None:
        from bench.routing_decision import DEPLOYMENTS, TARGET_P50_MS, TARGET_ROW

        row = routing["result"]["rows"][TARGET_ROW]["warm"]["total"]
        p50_ms = row["p50"] / 1000
        lines.append(f"| routing decision (route over {len(DEPLOYMENTS)} deployments, {TARGET_ROW} strategy, warm, "
                     f"in-process: "
                     f"below) < {TARGET_P50_MS:g} ms at p50 | {p50_ms:.3f} ms (p99 {row['p99'] / 1000:.3f}) | "
                     f"{_met(p50_ms < TARGET_P50_MS)} |")
    if fast is not None:
        lines += [f"| {target} | {measured} | {_met(ok)} |"
                  for target, measured, ok in peer_targets(fast["streams"], fast["levels"], fast["peer"])]
    lines += [
        "", "### Gateway ÷ litellm", "",
        "| | " + " | ".join(f"{s} stream{'s' if s > 1 else ''}" for s, _ in levels) + " |",
        "| --- |" + " --- |" * len(levels),
    ]
    rows = {
        "TTFT p50 ratio": lambda g, l: _f(_ratio(g["ttft_p50"], l["ttft_p50"]), 2),
        "TTFT p50 overhead (ms)": lambda g, l: _f(g["ttft_p50"] - l["ttft_p50"]),
        "TTFT p99 overhead (ms)": lambda g, l: _f(g["ttft_p99"] - l["ttft_p99"]),
        "tokens/s ratio": lambda g, l: _f(_ratio(g["tokens_per_s"], l["tokens_per_s"]), 2),
        "CPU ms per 1,000 tokens: gateway process ÷ litellm in-process": lambda g, l: _f(
            _ratio(g["gateway_cpu_per_1k"], l["bench_cpu_per_1k"]), 2),
    }
    for label, cell in rows.items():
        lines.append(f"| {label} | " + " | ".join(cell(streams[("gateway", s)], streams[("litellm", s)])
                                                 for s, _ in levels) + " |")
    if route is not None and all((p, s) in streams for p in ("gateway (route)", "gateway") for s, _ in levels):
        lines += routed_section(levels, streams, route)
    lines += [
        "", "### Streaming, raw numbers", "",
        "| path | streams | requests (errors) | TTFT p50 ms | TTFT p99 ms | tokens/s | "
        "CPU ms / 1k tokens | mock CPU (cores) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s, _ in levels:
        for p in paths:
            r = streams[(p, s)]
            cpu = (f"{_f(r['gateway_cpu_per_1k'], 0)} gateway (+{_f(r['bench_cpu_per_1k'], 0)} client)"
                   if p.startswith("gateway") else f"{_f(r['bench_cpu_per_1k'], 0)} in-process")
            errors = f" ({r['errors']}: {r['first_error']})" if r["errors"] else " (0)"
            lines.append(f"| {p} | {s} | {r['requests']}{errors} | {_f(r['ttft_p50'])} | {_f(r['ttft_p99'])} | "
                         f"{_f(r['tokens_per_s'], 0)} | {cpu} | {r['mock_cores']:.2f} |")
    short = sum(r["short"] for r in streams.values())
    busiest = max(streams.items(), key=lambda item: item[1]["mock_cores"])
    lines += [
        "",
        f"At {s_max} streams litellm and the gateway are CPU-bound (the mock offers {s_max * mock.rate:,} tok/s), "
        "so their TTFT there is mostly waiting for the CPU. The mock used at most "
        f"{busiest[1]['mock_cores']:.2f} cores ({busiest[0][0]}, {busiest[0][1]} streams)"
        + (": it was never the bottleneck." if busiest[1]["mock_cores"] < 0.5 else
           ": over half a core, so that row is partly limited by the mock."),
        "",
        f"Usage records written by the gateway: {sum(usage.values())} for {gateway_requests} requests "
        + ("(both upstreams, warm-ups included) " if fast is not None else "") +
        f"({', '.join(f'{k}: {v}' for k, v in sorted(usage.items()))})."
        + (f" {short} requests received fewer than {mock.tokens} tokens." if short else ""),
        "", "### Where the time to first token goes (p50, ms)", "",
        "| path | streams | client → mock receives | in the mock (its ttft_ms + prompt count) | "
        "mock's first chunk → client | TTFT |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s, _ in levels:
        for p in paths:
            r = streams[(p, s)]
            lines.append(f"| {p} | {s} | {_f(r['to_mock_p50'])} | {_f(r['in_mock_p50'])} | {_f(r['back_p50'])} | "
                         f"{_f(r['ttft_p50'])} |")
    if fast is not None:
        lines += peer_section(fast, machine)
    lines += first_token_section([(f"paced ({mock.ttft_ms} ms, {mock.rate:g} tok/s)", levels, streams)]
                                 + ([("zero-delay", fast["levels"], fast["streams"])] if fast is not None else []))
    c = conns
    lines += [
        "", "### Idle authenticated connections, one gateway process", "",
        "| connections opened (failed) | held: answered a ping | open + auth time | gateway CPU per connection | "
        "gateway fds (limit) | RSS before → with connections | KiB per connection | RSS after closing |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {c['opened']:,} of {c['attempted']:,} ({c['failed']}) | {c['held']:,} | {c['open_s']:.1f} s "
        f"({c['opened'] / c['open_s']:,.0f}/s) | {c['cpu_ms_per_conn']:.1f} ms | "
        f"{c['fds_before']:,} → {c['fds_after']:,} ({c['fd_limit']:,}) | "
        f"{c['rss_before_kib'] / 1024:,.1f} → {c['rss_after_kib'] / 1024:,.1f} MiB | {_f(c['kib_per_conn'])} | "
        f"{c['rss_closed_kib'] / 1024:,.1f} MiB |",
    ]
    if c["first_failure"]:
        lines += ["", f"First connection failure: `{c['first_failure']}`"]
    return "\n".join(lines) + "\n"


def peer_targets(streams: dict, levels, peer: dict) -> list[tuple[str, str, bool | None]]:
    """Issue 14's targets on the zero-delay rows: (target, measured, met; None when not measured)."""
    s_min, s_max = levels[0][0], levels[-1][0]
    missing = f"no {PEER} row: {peer.get('reason')}"
    g, l = streams[("gateway", s_min)], streams[("litellm", s_min)]
    p = streams.get((PEER, s_min))
    out = [(f"zero-delay upstream, {s_min} stream: gateway TTFT p50 ≤ litellm in-process + {PEER_TTFT_MARGIN_MS:g} ms",
            f"gateway {_f(g['ttft_p50'])} ms, litellm {_f(l['ttft_p50'])} + {PEER_TTFT_MARGIN_MS:g} = "
            f"{_f(l['ttft_p50'] + PEER_TTFT_MARGIN_MS)} ms ({_f(g['ttft_p50'] - l['ttft_p50'])} ms over litellm)",
            g["ttft_p50"] <= l["ttft_p50"] + PEER_TTFT_MARGIN_MS)]
    out.append((f"zero-delay upstream, {s_min} stream: gateway TTFT p50 below {PEER}'s",
                missing if p is None else f"gateway {_f(g['ttft_p50'])} ms, proxy {_f(p['ttft_p50'])} ms "
                f"(ratio {_f(_ratio(g['ttft_p50'], p['ttft_p50']), 2)})",
                None if p is None else g["ttft_p50"] < p["ttft_p50"]))
    g, p = streams[("gateway", s_max)], streams.get((PEER, s_max))
    ratio = None if p is None else _ratio(g["tokens_per_s"], p["tokens_per_s"])
    out.append((f"zero-delay upstream, {s_max} streams: gateway tokens/s ≥ {PEER_THROUGHPUT_RATIO:g}× {PEER}'s",
                missing if p is None else f"{_f(ratio, 2)}× ({_f(g['tokens_per_s'], 0)} vs "
                f"{_f(p['tokens_per_s'], 0)} tok/s)",
                None if p is None else ratio >= PEER_THROUGHPUT_RATIO))
    out.append((f"zero-delay upstream, {s_max} streams: gateway TTFT p99 no worse than {PEER}'s",
                missing if p is None else f"gateway {_f(g['ttft_p99'])} ms, proxy {_f(p['ttft_p99'])} ms "
                f"(ratio {_f(_ratio(g['ttft_p99'], p['ttft_p99']), 2)})",
                None if p is None else g["ttft_p99"] <= p["ttft_p99"]))
    return out


def peer_verdicts(streams: dict, levels, peer: dict) -> list[str]:
    """The issue-14 targets as plain lines for the terminal: '<target>: met|not met (<measured>)'."""
    plain = {True: "met", False: "not met", None: "not measured"}
    return [f"{target}: {plain[ok]} ({measured})" for target, measured, ok in peer_targets(streams, levels, peer)]


def peer_section(fast: dict, machine: dict) -> list[str]:
    """The zero-delay rows: the gateway against litellm in-process and LiteLLM Proxy."""
    mock, levels, streams, peer, paths = fast["mock"], fast["levels"], fast["streams"], fast["peer"], fast["paths"]
    workers = peer["workers"]
    if peer.get("reason"):
        who = f"**{PEER} is not in this run**: {peer['reason']}."
    else:
        who = (f"{PEER} is litellm {peer['version']}'s own proxy (`litellm --config … --num_workers {workers}`: "
               f"{workers} worker process{'es' if workers > 1 else ''}, as many as the gateway's "
               f"{peer['gateway_processes']}), installed by `make bench` in var/bench-peer/venv, one model on the "
               "same mock behind a random master key, no database, streamed over HTTP SSE by the `mock HTTP` client.")
    lines = [
        "", f"### Zero-delay upstream: the gateway against litellm and {PEER}", "",
        f"The mock with no wait before the first token (`ttft_ms={mock.ttft_ms:g}`) and no pacing (`rate={mock.rate:g}`), "
        f"{mock.tokens} tokens per request, so what each path costs in CPU shows at every level. "
        + ", ".join(f"{s} stream{'s' if s > 1 else ''} × {n} sequential requests" for s, n in levels)
        + f", after a warm-up of every path. {who} The gateway: {machine.get('database', '?')}, "
        f"{machine.get('layer', '?')} channel layer, the demo org without a budget. Targets: *Against the "
        "targets* above.", "",
        "| | " + " | ".join(f"{s} stream{'s' if s > 1 else ''}" for s, _ in levels) + " |",
        "| --- |" + " --- |" * len(levels),
    ]
    have_peer = all((PEER, s) in streams for s, _ in levels)
    rows = {
        "TTFT p50 (ms): gateway / litellm" + (" / proxy" if have_peer else ""): lambda g, l, p: (
            f"{_f(g['ttft_p50'])} / {_f(l['ttft_p50'])}" + (f" / {_f(p['ttft_p50'])}" if p else "")),
        "TTFT p99 (ms): gateway / litellm" + (" / proxy" if have_peer else ""): lambda g, l, p: (
            f"{_f(g['ttft_p99'])} / {_f(l['ttft_p99'])}" + (f" / {_f(p['ttft_p99'])}" if p else "")),
        "TTFT p50: gateway − litellm (ms)": lambda g, l, p: _f(g["ttft_p50"] - l["ttft_p50"]),
        "tokens/s: gateway / litellm" + (" / proxy" if have_peer else ""): lambda g, l, p: (
            f"{_f(g['tokens_per_s'], 0)} / {_f(l['tokens_per_s'], 0)}" + (f" / {_f(p['tokens_per_s'], 0)}" if p else "")),
        "tokens/s ratio: gateway ÷ litellm": lambda g, l, p: _f(_ratio(g["tokens_per_s"], l["tokens_per_s"]), 2),
    }
    if have_peer:
        rows.update({
            "TTFT p50 ratio: gateway ÷ proxy": lambda g, l, p: _f(_ratio(g["ttft_p50"], p["ttft_p50"]), 2),
            "TTFT p99 ratio: gateway ÷ proxy": lambda g, l, p: _f(_ratio(g["ttft_p99"], p["ttft_p99"]), 2),
            "tokens/s ratio: gateway ÷ proxy": lambda g, l, p: _f(_ratio(g["tokens_per_s"], p["tokens_per_s"]), 2),
            "CPU ms per 1,000 tokens: gateway process / proxy processes": lambda g, l, p: (
                f"{_f(g['gateway_cpu_per_1k'], 0)} / {_f(p['peer_cpu_per_1k'], 0)}"),
        })
    for label, cell in rows.items():
        lines.append(f"| {label} | " + " | ".join(
            cell(streams[("gateway", s)], streams[("litellm", s)], streams.get((PEER, s))) for s, _ in levels) + " |")
    lines += [
        "", "| path | streams | requests (errors) | TTFT p50 ms | TTFT p99 ms | tokens/s | CPU ms / 1k tokens | "
        "mock CPU (cores) | client → mock receives p50 | mock's first chunk → client p50 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s, _ in levels:
        for p in paths:
            r = streams[(p, s)]
            if p.startswith("gateway"):
                cpu = f"{_f(r['gateway_cpu_per_1k'], 0)} gateway (+{_f(r['bench_cpu_per_1k'], 0)} client)"
            elif p == PEER:
                cpu = f"{_f(r['peer_cpu_per_1k'], 0)} proxy (+{_f(r['bench_cpu_per_1k'], 0)} client)"
            else:
                cpu = f"{_f(r['bench_cpu_per_1k'], 0)} in-process"
            errors = f" ({r['errors']}: {r['first_error']})" if r["errors"] else " (0)"
            lines.append(f"| {p} | {s} | {r['requests']}{errors} | {_f(r['ttft_p50'])} | {_f(r['ttft_p99'])} | "
                         f"{_f(r['tokens_per_s'], 0)} | {cpu} | {r['mock_cores']:.2f} | {_f(r['to_mock_p50'])} | "
                         f"{_f(r['back_p50'])} |")
    busiest = max(streams.items(), key=lambda item: item[1]["mock_cores"])
    n = busiest[0][1]
    lines += ["", f"The mock used at most {busiest[1]['mock_cores']:.2f} cores ({busiest[0][0]}, {n} "
              f"stream{'s' if n > 1 else ''}); every other path used far less of it, so it bounds only the `mock HTTP` row. "
              "CPU per 1,000 tokens: the proxy's is every process in its process group."]
    return lines


def first_token_section(runs: list[tuple[str, list, dict]]) -> list[str]:
    """The gateway's own `latency_ms.first_token` (end frame) against its client's TTFT."""
    lines = [
        "", "### Gateway-reported first token against client-observed first token", "",
        "The gateway reports `latency_ms.first_token` in each `llm_response_end` frame (and the usage record): "
        "whole milliseconds, truncated, from the start of `serve_request` to the first token it sends. The "
        "client's TTFT runs from sending the `llm_request` frame to receiving the first `llm_token`. The "
        "difference is the time outside the request pipeline, both ways (client socket, daphne, channels, "
        "the consumer, the task; the truncation adds about 0.5 ms on average).", "",
        "| upstream | streams | requests with a report | client TTFT p50 ms | gateway-reported p50 ms | "
        "client − reported p50 ms | client − reported p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for upstream, levels, streams in runs:
        for s, _ in levels:
            r = streams.get(("gateway", s))
            if r is None:
                continue
            lines.append(f"| {upstream} | {s} | {r['reported']} | {_f(r['client_ttft_of_reported_p50'])} | "
                         f"{_f(r['reported_first_token_p50'])} | {_f(r['outside_pipeline_p50'])} | "
                         f"{_f(r['outside_pipeline_p99'])} |")
    return lines


def routed_section(levels, streams: dict, route: dict) -> list[str]:
    """The routed path against litellm and against the gateway path that names a deployment."""
    lines = [
        "", "### Routing end to end: gateway (route) against litellm and against gateway", "",
        f"`gateway (route)` sends `\"model\": \"{route['alias']}\"`, a route ({route['strategy']} strategy) over "
        f"{len(route['deployments'])} deployments on the same mock; `gateway` names one deployment. Same gateway "
        "process, same client, same litellm model string upstream: the difference is what routing costs "
        "(policies, resolution, strategy, health bookkeeping).", "",
        "| | " + " | ".join(f"{s} stream{'s' if s > 1 else ''}" for s, _ in levels) + " |",
        "| --- |" + " --- |" * len(levels),
    ]
    rows = {
        "TTFT p50 (ms): route / gateway / litellm": lambda r, g, l: (
            f"{_f(r['ttft_p50'])} / {_f(g['ttft_p50'])} / {_f(l['ttft_p50'])}"),
        "TTFT p50 ratio: route ÷ litellm": lambda r, g, l: _f(_ratio(r["ttft_p50"], l["ttft_p50"]), 2),
        "TTFT p50 ratio: route ÷ gateway": lambda r, g, l: _f(_ratio(r["ttft_p50"], g["ttft_p50"]), 2),
        "TTFT p50: route − gateway (ms)": lambda r, g, l: _f(r["ttft_p50"] - g["ttft_p50"]),
        "TTFT p99: route − gateway (ms)": lambda r, g, l: _f(r["ttft_p99"] - g["ttft_p99"]),
        "client → mock receives, p50: route − gateway (ms)": lambda r, g, l: _f(r["to_mock_p50"] - g["to_mock_p50"]),
        "tokens/s ratio: route ÷ litellm": lambda r, g, l: _f(_ratio(r["tokens_per_s"], l["tokens_per_s"]), 2),
        "tokens/s ratio: route ÷ gateway": lambda r, g, l: _f(_ratio(r["tokens_per_s"], g["tokens_per_s"]), 2),
        "gateway CPU ms per 1,000 tokens: route ÷ gateway": lambda r, g, l: _f(
            _ratio(r["gateway_cpu_per_1k"], g["gateway_cpu_per_1k"]), 2),
    }
    for label, cell in rows.items():
        lines.append(f"| {label} | " + " | ".join(
            cell(streams[("gateway (route)", s)], streams[("gateway", s)], streams[("litellm", s)])
            for s, _ in levels) + " |")
    served = route.get("served") or {}
    total = sum(served.values())
    if total:
        lines += ["", "Served by (usage records of the routed requests, warm-up included): "
                  + ", ".join(f"{name} {count} ({count * 100 / total:.0f}%)" for name, count in served.items())
                  + ". The latency strategy sends each request to the deployment with the lowest observed time to "
                  "first token, and 5% to another at random; all three are the same mock here, so which one "
                  "leads is noise."]
    lines.append("")
    lines.append("A difference of a few ms at p50 between two runs of the same path is within this machine's "
                 "run-to-run spread; the routing decision itself is timed directly in *Routing decision* below.")
    return lines


def write_docs(section: str) -> None:
    """Replace everything after MARKER in docs/benchmarks.md (append the marker if missing)."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    head = text.split(MARKER, 1)[0].rstrip("\n")
    DOCS.write_text(f"{head}\n\n{MARKER}\n\n{section}")


def bench_main(argv, *, parse, run_inner, run_all, render) -> int:
    """Entry point of a benchmark that measures in a child process: with `--inner`
    (the measuring process) it prints one run's JSON, else the report."""
    args = parse(argv)
    if args.inner:
        print(json.dumps(run_inner(args)))
    else:
        print(render(run_all(args), heading="##"))
    return 0


def run_inner(module: str, argv: list[str], env: dict[str, str], what: str) -> dict:
    """Run `python -m <module> --inner <argv>` (the measuring process) and return the
    JSON it prints last."""
    done = subprocess.run([sys.executable, "-m", module, "--inner", *argv], cwd=Path(__file__).resolve().parent.parent,
                          env=env, stdout=subprocess.PIPE, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"the {what} benchmark failed (exit {done.returncode}); see the log above")
    return json.loads(done.stdout.strip().splitlines()[-1])
