"""LiteLLM Proxy, the peer the benchmark compares the gateway with (docs/benchmarks.md).

`make bench` installs it once into its own virtual environment, ``var/bench-peer/venv``
(hash-pinned: ``bench/peer-requirements.txt``), never into the project's. The benchmark
starts it as a user would, ``litellm --config <yaml> --port <port> --num_workers <N>``, with
one model that points at the benchmark's mock LLM, and stops its whole process group when
done (also on Ctrl-C or an error).
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER_DIR = REPO_ROOT / "var" / "bench-peer"
VENV = PEER_DIR / "venv"
STAMP = PEER_DIR / ".installed"
FAILED_LOG = PEER_DIR / "install-failed.log"
READY_PATH = "/health/readiness"
START_TIMEOUT_S = 180.0  # the proxy imports a great deal before it listens
STOP_TIMEOUT_S = 15.0
# Only what the proxy needs from the environment: never the benchmark's DATABASE_URL or
# REDIS_URL (the proxy would take them as its own), nor any provider's key.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR")


class PeerError(RuntimeError):
    """The proxy did not start, or failed while being warmed up: its row is left out.
    ``args[0]`` says what happened in a line; ``args[1]``, when given, is the end of its log."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def log(self) -> str:
        return str(self.args[1]) if len(self.args) > 1 else ""


def executable() -> Path:
    return VENV / "bin" / "litellm"


def unavailable_reason() -> str | None:
    """None when the proxy is installed; else why not, in one sentence for the report."""
    if STAMP.exists() and executable().exists():
        return None
    if FAILED_LOG.exists():
        tail = [line.strip() for line in FAILED_LOG.read_text(errors="replace").splitlines() if line.strip()][-3:]
        said = f"ends: {' / '.join(tail)[:400]}" if tail else "is empty"
        return f"its install failed (var/bench-peer/install-failed.log {said}); `make bench` tries again"
    return "it is not installed: `make bench` installs it into var/bench-peer/venv (`python -m bench.run` alone does not)"


def version() -> str:
    """The litellm version installed in the proxy's environment (from its dist-info)."""
    found = sorted(VENV.glob("lib/python*/site-packages/litellm-*.dist-info"))
    return found[-1].name[len("litellm-"):-len(".dist-info")] if found else "unknown"


def config_yaml(*, model: str, api_base: str, master_key: str) -> str:
    """One model, served by the benchmark's mock (an OpenAI-compatible API), behind a master
    key (the proxy refuses to start without one; the gateway checks a key too). JSON is YAML."""
    return json.dumps({
        "model_list": [{"model_name": model,
                        "litellm_params": {"model": f"openai/{model}", "api_base": api_base, "api_key": "x"}}],
        # The same litellm settings the gateway and the in-process row use (bench/clients.py).
        "litellm_settings": {"drop_params": True, "telemetry": False, "num_retries": 0},
        "general_settings": {"master_key": master_key},
    }, indent=2) + "\n"


class LiteLLMProxy:
    """``with LiteLLMProxy(...) as proxy:`` — started and ready; ``proxy.api_base`` is its /v1."""

    def __init__(self, *, model: str, upstream_api_base: str, workers: int, work_dir: Path) -> None:
        self.model = model
        self.upstream = upstream_api_base
        self.workers = workers
        self.work_dir = work_dir
        self.port = 0
        self.master_key = f"sk-bench-{secrets.token_hex(24)}"
        self.proc: subprocess.Popen | None = None
        self.log_path = work_dir / "litellm-proxy.log"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # started with start_new_session: its own process group

    def __enter__(self) -> "LiteLLMProxy":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        config = self.work_dir / "litellm-proxy.yaml"
        config.write_text(config_yaml(model=self.model, api_base=self.upstream, master_key=self.master_key))
        self.port = free_port()
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONUNBUFFERED="1", VIRTUAL_ENV=str(VENV))
        command = [str(executable()), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port),
                   "--num_workers", str(self.workers)]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(command, cwd=self.work_dir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = f"http://127.0.0.1:{self.port}{READY_PATH}"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise PeerError(f"LiteLLM Proxy exited with code {self.proc.returncode} before it was ready "
                                f"(log: {self.log_path})", self.log_tail())
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise PeerError(f"LiteLLM Proxy was not ready within {START_TIMEOUT_S:g} s (log: {self.log_path})",
                        self.log_tail())

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to the whole process group, SIGKILL to whatever is left after a grace period."""
        if self.proc is None:
            return
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        try:  # workers that outlived their parent, or a parent that ignored SIGTERM
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _group_alive(self.pgid) and time.monotonic() < deadline:  # SIGKILL is delivered asynchronously
            time.sleep(0.05)
        self.proc = None


def _group_alive(pgid: int) -> bool:
    """Whether any process, zombies aside, is still in the process group."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False
