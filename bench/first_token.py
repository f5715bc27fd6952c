"""Where a client's first token waits outside the request pipeline:
``python -m bench.first_token`` (about a minute on loopback, most of it starting the stack).

The gateway's own ``latency_ms.first_token`` is measured inside ``serve_request``
(gateway/pipeline.py); the client sees its first token later, by whatever the way in
(socket → Twisted → autobahn → daphne → channels → the consumer → a task) and the way
out (frame → JSON → channels → daphne → autobahn → Twisted → socket) cost. This
benchmark times every one of those hops.

It starts the mock LLM, a fresh stack (the embedded default, or PostgreSQL + Redis
when ``DATABASE_URL`` / ``REDIS_URL`` are set, as the e2e tests do) and **two**
gateway processes side by side, each a real daphne (``openclaw_site.server``, with
the flags ``manage.py serve`` gives it) on loopback:

- ``before``: the gateway as it was before issue 14's first-token changes — this
  benchmark puts back, in that process only, what they removed (``--undo``, default
  all: channels' thread hop before every message's handler, accepted sockets without
  ``TCP_NODELAY``, the first token left in Twisted's buffer until the reactor's next
  turn, token frames encoded by ``json.dumps``);
- ``after``: the gateway as it is.

Both are instrumented the same way: ``time.perf_counter_ns`` stamps (CLOCK_MONOTONIC,
the same clock in every process of the machine) at each hop, kept in memory and
written out when the process stops; the instrumentation is this module's (patches in
the two processes it starts), nothing in the gateway. One client sends the same
streamed request (``[[mock tokens=N rate=0 ttft_ms=0]]``: the whole completion at once,
so every chunk is already buffered when the first is read) to each gateway in turn, one
at a time, ``--requests`` times each and for each ``--tokens`` count, so both see the
same machine at the same moments. The report gives the p50 of each hop and of
"gateway-reported first token" (``serve_request`` start → its first frame handed to
``send``; the end frame's ``latency_ms.first_token`` is the same span in whole
milliseconds) against "client-observed first token" (the client's send → its receipt
of the first ``llm_token``), and their difference. Hops named ``pl.*`` are inside the
pipeline (for the breakdown). It never enforces a target.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

VARIANTS = ("before", "after")
MODEL = "gpt-4-turbo"  # a demo deployment on the mock
TOKENS = 5


def directives(tokens: int) -> str:
    return f"[[mock tokens={tokens} rate=0 ttft_ms=0]]"

# The hops, in the order a request meets them: (stamp name, what ends there).
HOPS_IN = [
    ("in.sock_read", "Twisted reads the socket"),
    ("in.ws_message", "autobahn has the WebSocket message (daphne queues it)"),
    ("in.dispatch", "channels hands it to the consumer's dispatch"),
    ("in.receive", "the consumer's receive() starts"),
    ("in.parsed", "the frame is parsed and validated"),
    ("in.rechecked", "the key re-check is done"),
    ("in.task_created", "the request's task is created"),
    ("in.serve_start", "serve_request starts"),
]
# Inside serve_request, up to its first frame (for the breakdown; not outside the pipeline).
HOPS_PIPELINE = [
    ("pl.policies", "routing policies applied"),
    ("pl.resolved", "the model name resolved to deployments"),
    ("pl.counted", "prompt tokens counted"),
    ("pl.shaped", "output clamped, prompt fitted"),
    ("pl.reserved", "budget reserved"),
    ("pl.upstream_open", "the upstream call is opening (litellm builds the request)"),
    ("pl.upstream_opened", "the upstream answered (response headers)"),
]
HOPS_OUT = [
    ("out.send_frame", "the first llm_token frame is handed to send"),
    ("out.encoded", "it is JSON-encoded"),
    ("out.daphne_reply", "daphne has it (channels' send → daphne's handle_reply)"),
    ("out.transport_write", "autobahn has framed it and handed it to Twisted"),
    ("out.sock_write", "Twisted writes it to the socket"),
]


# --- the traced server (one gateway process) ------------------------------------------

def serve(trace_path: str, variant: str, daphne_args: list[str]) -> None:
    """Run `openclaw_site.server` with stamps at every hop (and, for `before`, the old behaviour)."""
    import atexit

    import openclaw_site.asgi  # noqa: F401  (Django, channels and the gateway, loaded as the server would)

    events: list[tuple[int, str]] = []
    stamp = events.append
    now = time.perf_counter_ns

    def dump() -> None:
        with open(trace_path, "w") as f:
            json.dump(events, f)

    atexit.register(dump)
    if variant.startswith("before"):
        _restore_old_behaviour(variant.partition(":")[2].split(","))
    _instrument(stamp, now)
    from openclaw_site import server

    sys.argv = ["openclaw_site.server", *daphne_args]
    server.main()


FIXES = {  # what `--undo` puts back in the `before` process, by name
    "dispatch": "channels' thread hop (close_old_connections) before every message's handler",
    "nodelay": "accepted sockets left with Nagle's algorithm (no TCP_NODELAY)",
    "push": "the first llm_token left in Twisted's buffer until the reactor's next turn",
    "encode": "llm_token frames encoded by json.dumps",
}


def _restore_old_behaviour(undo: list[str]) -> None:
    """Put back, in this process only, what the first-token changes removed."""
    from gateway import consumers
    from openclaw_site import sockets

    if "dispatch" in undo:
        from channels.db import aclose_old_connections

        fast_dispatch = consumers.GatewayConsumer.dispatch

        async def dispatch_with_thread_hop(self, message):
            await aclose_old_connections()  # what channels' AsyncConsumer.dispatch does first
            await fast_dispatch(self, message)

        consumers.GatewayConsumer.dispatch = dispatch_with_thread_hop
    if "nodelay" in undo:
        sockets.accepted = lambda transport: None
    if "push" in undo:
        sockets.push = lambda transport: None
    if "encode" in undo:
        from gateway import protocol

        def encode(frame):  # protocol.encode as it was: json.dumps for every frame
            text = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    text = json.dumps(frame, separators=(",", ":"))
            return text

        protocol.encode = encode


def _instrument(stamp, now) -> None:
    import daphne.ws_protocol
    from twisted.internet import abstract, tcp

    from gateway import consumers, protocol

    def wrap_sync(owner, name, label, after=False, when=None):
        original = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if not after and (when is None or when(*args, **kwargs)):
                stamp((now(), label))
            result = original(*args, **kwargs)
            if after and (when is None or when(*args, **kwargs)):
                stamp((now(), label))
            return result

        setattr(owner, name, wrapped)

    def wrap_async(owner, name, label, after=False):
        original = getattr(owner, name)

        async def wrapped(*args, **kwargs):
            if not after:
                stamp((now(), label))
            result = await original(*args, **kwargs)
            if after:
                stamp((now(), label))
            return result

        setattr(owner, name, wrapped)

    def is_send(_self, message):
        return message.get("type") == "websocket.send"

    # The way in.
    wrap_sync(tcp.Connection, "doRead", "in.sock_read")
    wrap_sync(daphne.ws_protocol.WebSocketProtocol, "onMessage", "in.ws_message")
    wrap_async(consumers.GatewayConsumer, "dispatch", "in.dispatch")
    wrap_async(consumers.GatewayConsumer, "receive", "in.receive")
    wrap_sync(protocol, "parse_client_frame", "in.parsed", after=True)
    wrap_async(consumers, "recheck_principal", "in.rechecked", after=True)
    wrap_async(consumers.GatewayConsumer, "on_llm_request", "in.task_created", after=True)
    original_serve = consumers.serve_request

    async def serve_request(**kwargs):
        stamp((now(), "in.serve_start"))
        await original_serve(**kwargs)

    consumers.serve_request = serve_request

    # Inside serve_request.
    from gateway import pipeline, providers

    wrap_async(pipeline, "apply_policies", "pl.policies", after=True)
    wrap_async(pipeline, "resolve_model_cached", "pl.resolved", after=True)
    wrap_async(pipeline, "count_prompt_tokens", "pl.counted", after=True)
    wrap_async(pipeline, "_shape", "pl.shaped", after=True)
    wrap_async(pipeline, "reserve_attempt", "pl.reserved", after=True)
    original_aenter = providers.UpstreamStream.__aenter__

    async def aenter(self):
        stamp((now(), "pl.upstream_open"))
        result = await original_aenter(self)
        stamp((now(), "pl.upstream_opened"))
        return result

    providers.UpstreamStream.__aenter__ = aenter

    # Off the request path: the usage writer's thread (holding the GIL while it runs).
    from billing import recorder

    original_write = recorder._write_batch

    def write_batch(*args, **kwargs):
        stamp((now(), "bg.usage_write"))
        try:
            return original_write(*args, **kwargs)
        finally:
            stamp((now(), "bg.usage_written"))

    recorder._write_batch = write_batch

    # The way out.
    original_send_frame = consumers.GatewayConsumer.send_frame

    async def send_frame(self, frame):
        stamp((now(), "out.send_frame:" + frame.get("type", "")))
        await original_send_frame(self, frame)

    consumers.GatewayConsumer.send_frame = send_frame
    wrap_sync(protocol, "encode", "out.encoded", after=True)
    wrap_sync(daphne.ws_protocol.WebSocketProtocol, "handle_reply", "out.daphne_reply", when=is_send)
    wrap_sync(abstract.FileDescriptor, "write", "out.transport_write")
    wrap_sync(tcp.Connection, "writeSomeData", "out.sock_write", after=True)


# --- the client ---------------------------------------------------------------------

async def _client(urls: dict[str, str], key: str, requests: int, warm_up: int, tokens: int,
                  run_of: int) -> dict[str, list[dict]]:
    from websockets.asyncio.client import connect

    sockets = {}
    for variant, url in urls.items():
        ws = await connect(url, ping_interval=None, max_size=2**22)
        await ws.send(json.dumps({"type": "auth", "token": key}))
        frame = json.loads(await ws.recv())
        if frame.get("type") != "auth_ok":
            raise RuntimeError(f"{variant}: authentication failed: {frame}")
        sockets[variant] = ws
    samples: dict[str, list[dict]] = {variant: [] for variant in urls}
    for block in range(0, warm_up + requests, run_of):
        order = list(urls) if (block // run_of) % 2 == 0 else list(reversed(urls))  # neither always goes first
        for variant in order:
            for i in range(block, min(block + run_of, warm_up + requests)):
                sample = await _one(sockets[variant], f"{variant}-{i}", tokens)
                if i >= warm_up:
                    samples[variant].append(sample)
    for ws in sockets.values():
        await ws.close()
    return samples


async def _one(ws, request_id: str, tokens: int) -> dict:
    body = json.dumps({"type": "llm_request", "request_id": request_id, "model": MODEL,
                       "prompt": f"Write a haiku. {request_id} {directives(tokens)}",
                       "parameters": {"max_tokens": tokens}})
    sample: dict = {"id": request_id}
    sample["sent"] = time.perf_counter_ns()
    await ws.send(body)
    while True:
        text = await ws.recv()
        at = time.perf_counter_ns()
        frame = json.loads(text)
        kind = frame["type"]
        if kind == "llm_response_start":
            sample["start"] = at
        elif kind == "llm_token":
            sample.setdefault("first", at)
            sample["last_token"] = at
        elif kind == "llm_response_end":
            sample["end"] = at
            sample["reported_ms"] = frame["latency_ms"]["first_token"]
            return sample
        elif kind == "error":
            raise RuntimeError(f"gateway error: {frame}")


# --- putting stamps and samples together ------------------------------------------------

def _first(events: list[tuple[int, str]], name: str, after: int, before: int) -> int | None:
    for at, label in events:
        if after <= at <= before and label == name:
            return at
    return None


def hops(sample: dict, events: list[tuple[int, str]]) -> dict[str, float] | None:
    """Milliseconds spent in each hop of one request (None if a stamp is missing)."""
    window = [(at, label) for at, label in events if sample["sent"] <= at <= sample["end"]]
    stamps: dict[str, int] = {"client.sent": sample["sent"]}
    for name, _ in HOPS_IN:
        found = _first(window, name, stamps[list(stamps)[-1]], sample["end"])
        if found is None:
            return None
        stamps[name] = found
    for name, _ in HOPS_PIPELINE:
        found = _first(window, name, stamps[list(stamps)[-1]], sample["end"])
        if found is None:
            return None
        stamps[name] = found
    start_frame = _first(window, "out.send_frame:llm_response_start", stamps["in.serve_start"], sample["end"])
    token_frame = _first(window, "out.send_frame:llm_token", stamps["in.serve_start"], sample["end"])
    if start_frame is None or token_frame is None:
        return None
    stamps["gateway.first_frame"] = start_frame
    for name in ("out.encoded", "out.daphne_reply", "out.transport_write"):
        found = _first(window, name, stamps[list(stamps)[-1]], token_frame)
        if found is None:
            return None
        stamps["start frame " + name] = found
    stamps["out.send_frame"] = token_frame
    for name, _ in HOPS_OUT[1:]:
        found = _first(window, name, stamps[list(stamps)[-1]], sample["end"])
        if found is None:
            return None
        stamps[name] = found
    stamps["client.first_token"] = sample["first"]
    names = list(stamps)
    result = {f"{a} → {b}": (stamps[b] - stamps[a]) / 1e6 for a, b in zip(names, names[1:])}
    result["gateway-reported first token"] = (start_frame - stamps["in.serve_start"]) / 1e6
    result["client-observed first token"] = (sample["first"] - sample["sent"]) / 1e6
    result["outside the pipeline"] = result["client-observed first token"] - result["gateway-reported first token"]
    result["end frame's latency_ms.first_token"] = float(sample["reported_ms"])
    result["first → last llm_token at the client"] = (sample["last_token"] - sample["first"]) / 1e6
    # Every later llm_token frame's way out on the gateway's side (per-frame cost).
    later = {"send_frame → encoded": [], "encoded → daphne": [], "daphne → Twisted": []}
    token_sends = [at for at, label in window if label == "out.send_frame:llm_token" and at > token_frame]
    for at in token_sends:
        encoded = _first(window, "out.encoded", at, sample["end"])
        reply = _first(window, "out.daphne_reply", encoded or at, sample["end"])
        written = _first(window, "out.transport_write", reply or at, sample["end"])
        if encoded and reply and written:
            later["send_frame → encoded"].append(encoded - at)
            later["encoded → daphne"].append(reply - encoded)
            later["daphne → Twisted"].append(written - reply)
    for name, values in later.items():
        if values:
            result[f"later llm_token: {name} (µs)"] = statistics.median(values) / 1e3
    # How long the previous request's usage write was still running after this request was sent.
    writes = [at for at, label in events if label == "bg.usage_written" and sample["sent"] < at < stamps["in.serve_start"]]
    result["usage write running after the send"] = (max(writes) - sample["sent"]) / 1e6 if writes else 0.0
    return result


def _p50(rows: list[dict[str, float]], key: str) -> float:
    values = [row[key] for row in rows if key in row]
    return statistics.median(values) if values else float("nan")


HEADLINES = ("gateway-reported first token", "client-observed first token", "outside the pipeline")


def render(runs: list[tuple[int, dict[str, list[dict[str, float]]]]], machine: dict) -> str:
    """One table per token count: the p50 of every hop, before and after."""
    order = ("alternating between the two gateways" if machine["run_of"] == 1
             else f"{machine['run_of']} back to back to each gateway in turn")
    lines = [
        f"{machine['date']}; {machine['cpu']}, {machine['cores']} cores; load average {machine['load_before']} "
        f"before, {machine['load_after']} after; {machine['database']}, {machine['layer']} channel layer; "
        f"{machine['reader']}; {machine['requests']} requests per gateway and table (after {machine['warm_up']} "
        f"warm-up), one at a time, {order}. `before` puts back: {', '.join(machine['undo']) or 'nothing'}.",
    ]
    for tokens, results in runs:
        keys = list(dict.fromkeys(key for rows in results.values() for row in rows for key in row))
        lines += ["", f"`{directives(tokens)}`, p50 in ms (µs where marked):", "",
                  "| hop | before | after | after − before |", "| --- | ---: | ---: | ---: |"]
        for key in keys:
            before, after = _p50(results["before"], key), _p50(results["after"], key)
            name = f"**{key}**" if key in HEADLINES else key
            lines.append(f"| {name} | {before:.3f} | {after:.3f} | {after - before:+.3f} |")
        lines.append("")
        for variant, rows in results.items():
            reported, observed = _p50(rows, HEADLINES[0]), _p50(rows, HEADLINES[1])
            lines.append(f"- {variant}: gateway-reported first token p50 {reported:.2f} ms, client-observed p50 "
                         f"{observed:.2f} ms, difference {observed - reported:.2f} ms ({len(rows)} requests "
                         f"with every stamp)")
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------

def run(*, requests: int, warm_up: int, tokens: list[int], undo: tuple[str, ...], run_of: int,
        litellm_reader: bool) -> tuple[list, dict]:
    from bench import report
    from tests.support.mockllm import MockLLMProcess
    from tests.support.stack import Stack, free_port, wait_for_port

    machine = report.machine()
    with tempfile.TemporaryDirectory(prefix="openclaw-first-token-") as tmp:
        os.environ["OPENCLAW_DATA_DIR"] = tmp
        import django

        django.setup()
        from openclaw_site.processes import gateway_command

        with MockLLMProcess(rate=0, ttft_ms=0, default_tokens=TOKENS) as mock:
            stack = Stack(Path(tmp), mock_api_base=mock.api_base, name="first_token")
            if litellm_reader:
                stack.env["OPENCLAW_LEAN_STREAM"] = "0"
            try:
                stack.prepare()
                urls, traces = {}, {}
                for variant in VARIANTS:
                    port = free_port()
                    traces[variant] = Path(tmp) / f"trace-{variant}.json"
                    daphne_args = gateway_command(host="127.0.0.1", port=port)[3:]
                    mode = f"before:{','.join(undo)}" if variant == "before" else variant
                    command = [sys.executable, "-m", "bench.first_token", "--serve", str(traces[variant]), mode,
                               "--", *daphne_args]
                    process = subprocess.Popen(command, cwd=REPO, env=stack.env, stdout=subprocess.DEVNULL,
                                               stderr=open(Path(tmp) / f"gateway-{variant}.log", "w"))
                    stack.processes.append((f"gateway:{variant}", process))
                    wait_for_port(port, process, f"gateway ({variant})")
                    urls[variant] = f"ws://127.0.0.1:{port}/websocket"
                samples = [(n, asyncio.run(_client(urls, stack.api_key, requests, warm_up, n, run_of)))
                           for n in tokens]
            finally:
                stack.stop()  # SIGTERM: each traced gateway writes its stamps as it exits
            events = {v: sorted((at, label) for at, label in json.loads(traces[v].read_text())) for v in VARIANTS}
    machine["load_after"] = report.loadavg()
    machine["database"] = "PostgreSQL" if stack.pg_url else "SQLite"
    machine["layer"] = "Redis" if os.environ.get("REDIS_URL") else "in-memory"
    machine["reader"] = "litellm's stream reader (OPENCLAW_LEAN_STREAM=0)" if litellm_reader else "the lean read"
    machine.update(requests=requests, warm_up=warm_up, undo=undo, run_of=run_of)
    runs = []
    for n, by_variant in samples:
        results = {}
        for variant in VARIANTS:
            rows = [hops(sample, events[variant]) for sample in by_variant[variant]]
            results[variant] = [row for row in rows if row is not None]
        runs.append((n, results))
    return runs, machine


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        trace, variant, _sep, *daphne_args = argv[1:]
        serve(trace, variant, daphne_args)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.first_token", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="timed requests per gateway and token count "
                                                                  "(default 100)")
    parser.add_argument("--warm-up", type=int, default=10, help="untimed requests per gateway first (default 10)")
    parser.add_argument("--tokens", default="5,50",
                        help="tokens per completion, one table each (comma-separated; default 5,50)")
    parser.add_argument("--undo", default=",".join(FIXES),
                        help="what the `before` gateway puts back (comma-separated; default all): "
                             + "; ".join(f"{k}: {v}" for k, v in FIXES.items()))
    parser.add_argument("--back-to-back", type=int, default=1, metavar="N",
                        help="requests sent back to back to one gateway before switching to the other (default 1)")
    parser.add_argument("--litellm-reader", action="store_true",
                        help="both gateways read streams through litellm's wrapper (OPENCLAW_LEAN_STREAM=0)")
    parser.add_argument("--json", action="store_true", help="also print every request's hops as JSON")
    args = parser.parse_args(argv)
    undo = tuple(filter(None, args.undo.split(",")))
    unknown = set(undo) - set(FIXES)
    if unknown:
        parser.error(f"--undo: unknown {', '.join(sorted(unknown))}; choose from {', '.join(FIXES)}")
    runs, machine = run(requests=args.requests, warm_up=args.warm_up,
                        tokens=[int(n) for n in args.tokens.split(",")], undo=undo,
                        run_of=args.back_to_back, litellm_reader=args.litellm_reader)
    print(render(runs, machine))
    if args.json:
        print(json.dumps(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
