"""`manage.py mockllm` (openclaw_site/management/commands/mockllm.py): the mock LLM
started through Django's command line serves a completion, says where it listens and
stops cleanly on SIGTERM. The mock itself: tests/mockllm/test_server.py."""
import json
import os
import sys
import time

import pytest

from tests.support.mockllm import REPO_ROOT


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_listening(proc, port: int, timeout: float = 60.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"manage.py mockllm not listening on {port} (exit code {proc.poll()})")


def test_manage_py_mockllm_serves_a_completion_and_stops_on_sigterm(tmp_path):
    import signal
    import subprocess
    import urllib.request

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(OPENCLAW_DATA_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "mockllm", "--port", str(port), "--rate", "0", "--ttft-ms", "0"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_until_listening(proc, port)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps({"model": "mock-fast", "messages": [{"role": "user", "content": "hi [[mock tokens=3]]"}],
                             "stream": False}).encode(),
            headers={"Authorization": "Bearer mock-key", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            result = json.loads(response.read())
        assert result["object"] == "chat.completion" and result["model"] == "mock-fast"
        assert result["choices"][0]["message"]["role"] == "assistant"
        assert len(result["choices"][0]["message"]["content"].split()) == 3
        assert result["usage"]["completion_tokens"] == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("manage.py mockllm did not exit within 30 s of SIGTERM")
    assert proc.returncode == 0, stderr
    assert f"mockllm listening on http://127.0.0.1:{port}" in stdout
    assert "Traceback" not in stderr, stderr
