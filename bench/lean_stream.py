"""The lean streaming path against litellm's stream wrapper, in-process:
``python -m bench.lean_stream`` (about a minute on 2 busy cores; ``--quick``: 2 rounds).

The mock LLM (a subprocess, ``rate=0``: tokens as fast as it can write them) streams
``--tokens`` tokens (default 50) to ``--streams`` concurrent streams (default 50), for
``--rounds`` rounds, once read by litellm's stream wrapper and once by the lean read, in
alternating rounds so both see the same machine. Each stream is the gateway's own
``gateway.providers.UpstreamStream`` (the same object the pipeline reads: litellm opens the
call in both paths; only the reading differs), read to its end.

Reported per path: CPU of this process per chunk (``time.process_time``: the process does
nothing else; the mock's CPU is its own), tokens per second (wall), and the ratio. The
mock's own cost is the same for both paths. Never enforces a target.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


async def _one(call_cls, stream_cls, target, prompt: str, max_tokens: int) -> int:
    stream = stream_cls(call_cls(target=target, messages=[{"role": "user", "content": prompt}],
                                 max_tokens=max_tokens))
    count = 0
    async with stream:
        async for _text in stream.deltas():
            count += 1
    return count


async def _round(settings, lean: bool, target, streams: int, tokens: int, seed: int) -> tuple[float, float, int]:
    from gateway.providers import UpstreamCall, UpstreamStream

    settings.GATEWAY["LEAN_STREAM"] = lean
    prompts = [f"bench {seed}-{i} [[mock tokens={tokens} rate=0 ttft_ms=0]]" for i in range(streams)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    counts = await asyncio.gather(*(_one(UpstreamCall, UpstreamStream, target, p, tokens + 10) for p in prompts))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    if any(c != tokens for c in counts):
        raise RuntimeError(f"a stream ended early: {counts}")
    return cpu, wall, sum(counts)


async def measure(api_base: str, *, streams: int, tokens: int, rounds: int) -> dict:
    import gc

    from django.conf import settings

    from catalog.money import Prices
    from catalog.targets import Target
    from decimal import Decimal

    target = Target(deployment_id=1, name="bench", provider="mock", litellm_model="openai/mock-fast",
                    api_base=api_base, api_key="bench", extra_params={}, prices=Prices(Decimal(1), Decimal(1)),
                    context_window=8192, max_output_tokens=4096, tags=(), region="", rpm_limit=None,
                    tpm_limit=None, max_concurrency=None, connect_timeout_s=5, first_token_timeout_s=30,
                    idle_timeout_s=30, total_timeout_s=120)
    # Warm both paths (litellm's first call imports its provider modules; connections open).
    for lean in (False, True):
        await _round(settings, lean, target, streams, tokens, seed=-1)
    totals = {"litellm": [0.0, 0.0, 0], "lean": [0.0, 0.0, 0]}
    for r in range(rounds):
        for name, lean in (("litellm", False), ("lean", True)) if r % 2 == 0 else (("lean", True), ("litellm", False)):
            gc.collect()
            cpu, wall, chunks = await _round(settings, lean, target, streams, tokens, seed=r)
            total = totals[name]
            total[0] += cpu
            total[1] += wall
            total[2] += chunks
    return {name: {"cpu_us_per_chunk": cpu / chunks * 1e6, "tokens_per_s": chunks / wall, "chunks": chunks,
                   "cpu_s": cpu, "wall_s": wall}
            for name, (cpu, wall, chunks) in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds

    data_dir = tempfile.mkdtemp(prefix="openclaw-bench-lean-")
    os.environ.update(OPENCLAW_DATA_DIR=data_dir, DJANGO_SETTINGS_MODULE="openclaw_site.settings")
    for name in ("DATABASE_URL", "REDIS_URL"):  # nothing here touches them
        os.environ.pop(name, None)
    import django

    django.setup()
    from bench import report
    from tests.support.mockllm import MockLLMProcess

    with MockLLMProcess(rate=0, ttft_ms=0) as mock:
        results = asyncio.run(measure(mock.api_base, streams=args.streams, tokens=args.tokens, rounds=rounds))
    full, lean = results["litellm"], results["lean"]
    print(f"# lean streaming path vs litellm's stream wrapper ({args.streams} streams x {args.tokens} tokens, "
          f"{rounds} rounds each, mock rate=0)")
    print(f"machine: {report.machine()}; load average before: {report.loadavg()}")
    print(f"{'path':<10} {'CPU us/chunk':>14} {'tokens/s':>10} {'chunks':>8} {'CPU s':>7} {'wall s':>7}")
    for name, row in (("litellm", full), ("lean", lean)):
        print(f"{name:<10} {row['cpu_us_per_chunk']:>14.0f} {row['tokens_per_s']:>10.0f} {row['chunks']:>8} "
              f"{row['cpu_s']:>7.2f} {row['wall_s']:>7.2f}")
    print(f"lean / litellm: CPU per chunk {lean['cpu_us_per_chunk'] / full['cpu_us_per_chunk']:.2f}x, "
          f"tokens/s {lean['tokens_per_s'] / full['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
