"""Run the mock LLM (``python -m mockllm``) as a subprocess for tests.

    with MockLLMProcess(rate=0, ttft_ms=0) as mock:
        litellm.acompletion(model="openai/mock-fast", api_base=mock.api_base, ...)
        record = mock.wait_for_event("my-tag", lambda r: r["outcome"] is not None)

Only the standard library is used (urllib), so it works in sync and async tests alike.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable

REPO_ROOT = Path(__file__).resolve().parents[2]
_LISTENING_RE = re.compile(r"^mockllm listening on (http://\S+?):(\d+)\s*$")


class MockLLMError(RuntimeError):
    """The mock could not be started or queried."""


class MockLLMProcess:
    """A mock LLM server in a subprocess, on a free port of 127.0.0.1.

    ``rate``, ``ttft_ms`` and ``default_tokens`` are the server defaults (None: the CLI's
    defaults 50 / 100 / 24). ``wait_ready`` (default True) also waits until the mock's
    prompt token counter (litellm, imported in the background) is loaded, so the first
    request is not delayed by that import.
    """

    def __init__(
        self,
        *,
        rate: float | None = None,
        ttft_ms: float | None = None,
        default_tokens: int | None = None,
        host: str = "127.0.0.1",
        extra_args: Iterable[str] = (),
        env: dict[str, str] | None = None,
        startup_timeout: float = 30.0,
        wait_ready: bool = True,
        ready_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.args = ["--host", host, "--port", "0"]
        if rate is not None:
            self.args += ["--rate", str(rate)]
        if ttft_ms is not None:
            self.args += ["--ttft-ms", str(ttft_ms)]
        if default_tokens is not None:
            self.args += ["--default-tokens", str(default_tokens)]
        self.args += list(extra_args)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.wait_ready_on_start = wait_ready
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.base_url: str = ""
        self._stderr_file = None
        self._stdout_lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_base(self) -> str:
        return self.base_url + "/v1"

    def start(self) -> "MockLLMProcess":
        if self.proc is not None:
            raise MockLLMError("MockLLMProcess already started")
        env = dict(os.environ)
        env.update(
            PYTHONUNBUFFERED="1",
            LITELLM_LOCAL_MODEL_COST_MAP="True",
        )
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        env.update(self.extra_env)
        self._stderr_file = tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mockllm", *self.args],
            cwd=str(REPO_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
        )
        self._reader = threading.Thread(
            target=self._read_stdout, name="mockllm-stdout", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None:
                self._fail(f"mock LLM exited with code {self.proc.returncode} before listening")
            if time.monotonic() > deadline:
                self._fail(f"mock LLM did not print its listening line within {self.startup_timeout:g} s")
        if self.wait_ready_on_start:
            self.wait_ready(self.ready_timeout)
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self._stdout_lines.append(line)
            match = _LISTENING_RE.match(line)
            if match and not self._listening.is_set():
                self.port = int(match.group(2))
                # Always talk to the loopback address the mock was bound to.
                host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
                self.base_url = f"http://{host}:{self.port}"
                self._listening.set()

    def stderr_text(self) -> str:
        if self._stderr_file is None:
            return ""
        try:
            self._stderr_file.flush()
            self._stderr_file.seek(0)
            return self._stderr_file.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def _fail(self, message: str) -> None:
        stderr = self.stderr_text()
        stdout = "\n".join(self._stdout_lines)
        self.stop()
        raise MockLLMError(
            f"{message}\ncommand: {sys.executable} -m mockllm {' '.join(self.args)}"
            f"\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/healthz`` says the prompt token counter is loaded."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                self._fail("mock LLM exited while loading")
            try:
                if self._get_json("/healthz").get("ready"):
                    return
            except MockLLMError:
                pass
            if time.monotonic() > deadline:
                self._fail(f"mock LLM not ready within {timeout:g} s")
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the mock (then SIGKILL after ``timeout``); returns its exit code."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None
        # The stderr file stays open so stderr_text() still works after stop().
        return proc.returncode if proc is not None else None

    def __enter__(self) -> "MockLLMProcess":
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __del__(self) -> None:  # best effort: never leave a mock running
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass

    # ---------------------------------------------------------------------- HTTP

    def _request(self, method: str, path: str, timeout: float = 10.0) -> bytes:
        if not self.base_url:
            raise MockLLMError("mock LLM is not running")
        req = urllib.request.Request(self.base_url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise MockLLMError(f"{method} {self.base_url}{path} failed: {exc}") from exc

    def _get_json(self, path: str) -> Any:
        return json.loads(self._request("GET", path))

    @staticmethod
    def _query(tag: str | None) -> str:
        return "" if tag is None else "?" + urllib.parse.urlencode({"tag": tag})

    def events(self, tag: str | None = None) -> list[dict[str, Any]]:
        """Request records (without messages), oldest first; only ``tag``'s if given."""
        return self._get_json("/_mock/events" + self._query(tag))

    def requests(self, tag: str | None = None) -> list[dict[str, Any]]:
        """Request records including ``messages`` and ``max_tokens``."""
        return self._get_json("/_mock/requests" + self._query(tag))

    def clear(self) -> None:
        """Forget every request record."""
        self._request("DELETE", "/_mock/events")

    def wait_for_event(
        self,
        tag: str | None,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        """Poll until a record with ``tag`` satisfies ``predicate``; return it.

        ``predicate=None`` accepts any record. Raises ``AssertionError`` (with the records
        seen) after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while True:
            seen = self.events(tag)
            for record in seen:
                if predicate is None or predicate(record):
                    return record
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no mock LLM record with tag {tag!r} matched within {timeout:g} s; "
                    f"records: {json.dumps(seen, indent=1, default=str)[:4000]}"
                )
            time.sleep(0.01)
