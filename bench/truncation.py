"""Prompt truncation, in-process: ``python -m bench.truncation`` (also run by ``make bench``).

A conversation of tiny messages (``--messages``, default 3,000: about 100 KB) sent to a
deployment with an 8k context window (``openai/gpt-4``, 8,192 tokens, ``max_tokens``
1,024: room for 7,168 prompt tokens) has to lose most of its turns. The same truncation
is timed two ways in one run, side by side:

- ``quadratic_fit_baseline``: the algorithm the gateway used before (drop the oldest turn,
  recount the whole kept conversation, repeat), kept here only as the baseline;
- ``gateway.tokens._fit``: what the gateway does now (each message counted once, then one
  recount of what is kept).

Both must keep the same messages and report the same tokens (checked). Reported per
algorithm: CPU seconds (``time.process_time``, the whole process, which does nothing else),
wall seconds, calls to ``litellm.token_counter`` and messages passed to it. For scale, one
count of the whole prompt (what every request pays before truncation) is timed too.

Then, with the gateway's counting pool: org A starts ``--burst`` such truncations at once
while org B counts a 30 KB prompt; reported: how long B's count took and the event loop's
worst lag meanwhile (a 1 ms timer's overshoot).

Runs in a subprocess of its own (Django settings on a temporary data directory; no
database is touched). ``--quick`` uses 1,000 messages. Never enforces a target.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from importlib.metadata import version

from bench import report

MODEL = "openai/gpt-4"
CONTEXT_WINDOW = 8192
MAX_TOKENS = 1024
MESSAGES = 3000
QUICK_MESSAGES = 1000
BURST = 4
OTHER_ORG_CHARS = 30_000


def say(message: str) -> None:
    print(f"[bench truncation {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def conversation(n: int) -> list[dict]:
    """A system prompt, then `n` tiny alternating turns; the last one is the question."""
    messages = [{"role": "system", "content": "You are terse."}]
    for i in range(n - 2):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"turn {i}: ok, noted, please go on."})
    messages.append({"role": "user", "content": "So what was the first thing I said?"})
    return messages


def quadratic_fit_baseline(model: str, messages: list[dict], prompt_tokens: int, room: int):
    """THE OLD ALGORITHM, the benchmark's baseline only: drop the oldest droppable turn and
    recount everything kept, until it fits (quadratic in the number of messages)."""
    from gateway.tokens import FittedPrompt, PromptTooLong, _count_messages

    if prompt_tokens <= room:
        return FittedPrompt(messages, prompt_tokens)
    droppable = [i for i, m in enumerate(messages[:-1]) if m.get("role") != "system"]
    keep = set(range(len(messages)))
    for index in droppable:
        keep.discard(index)
        kept = [m for i, m in enumerate(messages) if i in keep]
        tokens = _count_messages(model, kept)
        if tokens <= room:
            return FittedPrompt(kept, tokens, prompt_tokens - tokens, len(messages) - len(kept))
    minimal = [m for i, m in enumerate(messages) if i in keep]
    raise PromptTooLong(_count_messages(model, minimal), room, minimal)


class CountingCalls:
    """Wraps litellm.token_counter to count calls and the messages passed to them."""

    def __init__(self, litellm) -> None:
        self.litellm, self.original = litellm, litellm.token_counter
        self.calls = self.messages = 0

    def __enter__(self):
        def counting(*args, **kwargs):
            self.calls += 1
            self.messages += len(kwargs.get("messages") or ())
            return self.original(*args, **kwargs)

        self.litellm.token_counter = counting
        return self

    def __exit__(self, *exc) -> None:
        self.litellm.token_counter = self.original


def _timed(litellm, work) -> dict:
    with CountingCalls(litellm) as calls:
        cpu, wall = time.process_time(), time.perf_counter()
        result = work()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_s": cpu, "wall_s": wall, "calls": calls.calls, "messages": calls.messages, "result": result}


async def _burst(messages: list[dict], prompt_tokens: int, room: int, burst: int) -> dict:
    """Org A: `burst` truncations at once; org B: one 30 KB count meanwhile."""
    from gateway import counting
    from gateway.tokens import count_prompt_tokens, fit_prompt

    other = [{"role": "user", "content": ("The other org's question, one of many words. " * 1000)[:OTHER_ORG_CHARS]}]
    lag = 0.0
    stop = asyncio.Event()

    async def probe() -> None:
        nonlocal lag
        while not stop.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            lag = max(lag, time.perf_counter() - before - 0.001)

    prober = asyncio.create_task(probe())
    started = time.perf_counter()
    a = [asyncio.create_task(fit_prompt(MODEL, messages, prompt_tokens, room, org="org-a")) for _ in range(burst)]
    await asyncio.sleep(0.005)  # org A's truncations have taken their slot and queued
    b_started = time.perf_counter()
    await count_prompt_tokens(MODEL, other, org="org-b")
    b_s = time.perf_counter() - b_started
    await asyncio.gather(*a)
    a_s = time.perf_counter() - started
    stop.set()
    await prober
    return {"burst": burst, "threads": counting.pool_size(), "per_org": counting.per_org(), "other_org_s": b_s,
            "org_a_s": a_s, "loop_lag_max_ms": lag * 1000, "other_chars": OTHER_ORG_CHARS}


def run_inner(args) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "openclaw_site.settings")
    import django

    django.setup()
    from catalog.litellm_setup import litellm
    from gateway.tokens import _count_messages, _fit

    messages = conversation(args.messages)
    room = CONTEXT_WINDOW - MAX_TOKENS
    _count_messages(MODEL, messages[:3])  # the tokenizer's first load, untimed
    whole = _timed(litellm, lambda: _count_messages(MODEL, messages))
    prompt_tokens = whole.pop("result")
    say(f"{len(messages):,} messages, {sum(len(m['content']) for m in messages):,} characters, "
        f"{prompt_tokens:,} tokens; room {room:,}")
    new = _timed(litellm, lambda: _fit(MODEL, messages, prompt_tokens, room))
    say(f"new: {new['cpu_s']:.3f} s CPU, {new['calls']} calls")
    old = _timed(litellm, lambda: quadratic_fit_baseline(MODEL, messages, prompt_tokens, room))
    say(f"old: {old['cpu_s']:.3f} s CPU, {old['calls']} calls")
    a, b = new.pop("result"), old.pop("result")
    assert (a.messages, a.prompt_tokens, a.removed_tokens, a.removed_messages) == \
           (b.messages, b.prompt_tokens, b.removed_tokens, b.removed_messages), "the two algorithms disagree"
    burst = asyncio.run(_burst(messages, prompt_tokens, room, args.burst)) if args.burst else None
    return {"messages": len(messages), "chars": sum(len(m["content"]) for m in messages),
            "prompt_tokens": prompt_tokens, "room": room, "kept": len(a.messages), "sent_tokens": a.prompt_tokens,
            "count": whole, "new": new, "old": old, "burst": burst}


def run_all(args) -> dict:
    machine = report.machine()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="openclaw-bench-truncation-") as tmp:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "OPENCLAW_DATA_DIR")}
        env.update(DJANGO_SETTINGS_MODULE="openclaw_site.settings", OPENCLAW_DATA_DIR=tmp, PYTHONUNBUFFERED="1",
                   LITELLM_LOCAL_MODEL_COST_MAP="True")
        result = report.run_inner("bench.truncation", ["--messages", str(args.messages), "--burst", str(args.burst)],
                                  env, "truncation")
    machine["load_after"] = report.loadavg()
    machine["duration_s"] = time.monotonic() - started
    machine["versions"] = ", ".join(f"{p} {version(p)}" for p in ("litellm", "tiktoken"))
    return {"machine": machine, "result": result}


def render(run: dict, *, heading: str = "###") -> str:
    m, r = run["machine"], run["result"]
    old, new, count = r["old"], r["new"], r["count"]
    lines = [
        f"{heading} Prompt truncation", "",
        f"{m['date']} · {m['cpu']}, {m['cores']} cores, {m['ram_gib']:.1f} GiB RAM · Linux {m['kernel']} · "
        f"Python {m['python']} · {m['versions']} · load average {m['load_before']} before, {m['load_after']} after · "
        f"run took {m['duration_s']:.0f} s", "",
        f"{r['messages']:,} tiny messages ({r['chars']:,} characters, {r['prompt_tokens']:,} tokens) to `{MODEL}` "
        f"with an {CONTEXT_WINDOW:,}-token context and `max_tokens` {MAX_TOKENS:,}: room for {r['room']:,}; both "
        f"keep the same {r['kept']:,} messages ({r['sent_tokens']:,} tokens). One count of the whole prompt, for "
        f"scale: {report._f(count['cpu_s'] * 1000)} ms CPU.", "",
        "| truncation | CPU s | wall s | `token_counter` calls | messages counted |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in (("before: drop one, recount all (baseline)", old), ("now: each message counted once", new)):
        lines.append(f"| {name} | {row['cpu_s']:.3f} | {row['wall_s']:.3f} | {row['calls']:,} | "
                     f"{row['messages']:,} |")
    if new["cpu_s"] > 0:
        lines += ["", f"{old['cpu_s'] / new['cpu_s']:,.0f}× less CPU."]
    b = r.get("burst")
    if b:
        lines += ["", f"Org A starts {b['burst']} of these truncations at once while org B counts a "
                  f"{b['other_chars'] // 1000} KB prompt (counting pool of {b['threads']} threads, {b['per_org']} "
                  f"count per org at a time): org B's count took {b['other_org_s'] * 1000:,.0f} ms, org A's "
                  f"{b['burst']} took {b['org_a_s']:.2f} s in all, and the event loop's worst lag was "
                  f"{b['loop_lag_max_ms']:,.1f} ms."]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.truncation", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=MESSAGES, help="messages in the conversation")
    parser.add_argument("--burst", type=int, default=BURST, help="org A's truncations at once (0: skip)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_MESSAGES:,} messages")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)  # the measuring process, JSON out
    args = parser.parse_args(argv)
    if args.quick:
        args.messages = min(args.messages, QUICK_MESSAGES)
    return args


def main(argv: list[str] | None = None) -> int:
    return report.bench_main(argv, parse=parse, run_inner=run_inner, run_all=run_all, render=render)


if __name__ == "__main__":
    sys.exit(main())
