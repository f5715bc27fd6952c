"""Command line: ``python -m mockllm [--host H] [--port P] [--rate R] ...``.

Once listening it prints exactly one line, ``mockllm listening on http://HOST:PORT``, and
flushes stdout; ``--port 0`` picks a free port. SIGTERM / SIGINT stop it cleanly (exit 0).
The Django management command ``mockllm`` reuses ``add_arguments`` and ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def _port(text: str) -> int:
    value = _non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The mock's options (shared with the ``mockllm`` management command)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8100, help="TCP port; 0 picks a free one (default 8100)")
    parser.add_argument("--rate", type=_non_negative_float, default=50.0,
                        help="default tokens per second; 0 = no delay between chunks (default 50)")
    parser.add_argument("--ttft-ms", dest="ttft_ms", type=_non_negative_float, default=100.0,
                        help="default delay before the first content chunk, ms (default 100)")
    parser.add_argument("--default-tokens", dest="default_tokens", type=_non_negative_int, default=24,
                        help="default completion tokens per response (default 24)")
    parser.add_argument("--log-level", dest="log_level", default="WARNING",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level for stderr (default WARNING)")


def run(*, host: str, port: int, rate: float, ttft_ms: float, default_tokens: int,
        log_level: str = "WARNING", **_ignored) -> None:
    """Serve until SIGTERM/SIGINT."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    logging.basicConfig(
        level=getattr(logging, str(log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from .server import serve

    try:
        asyncio.run(serve(host, port, rate=rate, ttft_ms=ttft_ms, default_tokens=default_tokens))
    except KeyboardInterrupt:  # SIGINT before the handlers were installed
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mockllm",
        description="OpenAI-compatible mock LLM server for the OpenClaw gateway.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        run(**vars(args))
    except OSError as exc:  # e.g. address already in use
        print(f"mockllm: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    exit_code = main()
    # Skip interpreter finalization: tearing down litellm's module graph takes seconds
    # and the mock holds nothing that needs it. Flush what was written, then leave.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
