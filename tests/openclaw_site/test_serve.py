"""`manage.py serve` (openclaw_site/management/commands/serve.py): one production gateway
process, daphne with the flags the environment's settings give (built by
openclaw_site/processes.py), or with `--processes N` a supervisor running N of them on one
port; `--print` shows the command instead of running it. Several real processes:
tests/e2e/test_serve_processes.py."""
import os
import socket
import subprocess
import sys

import pytest

from tests.support.environments import command_option as flag
from tests.support.mockllm import REPO_ROOT


def test_manage_serve_runs_that_command_with_the_environments_settings(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "OPENCLAW_DATA_DIR": str(tmp_path), "OPENCLAW_MAX_MESSAGE_BYTES": "65536",
           "OPENCLAW_HEARTBEAT_SECONDS": "3", "OPENCLAW_REQUEST_HEAD_TIMEOUT_SECONDS": "4"}
    result = subprocess.run([sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", "8123",
                             "--print"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert flag(command, "--websocket-max-message-size") == str(4 * 65536)
    assert flag(command, "--ping-interval") == "3" and flag(command, "-p") == "8123"
    assert flag(command, "--request-head-timeout") == "4"  # the slowloris deadline
    assert command[-1] == "openclaw_site.asgi:application"


def serve(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py serve ARGS` with only the given environment (no REDIS_URL unless passed)."""
    return subprocess.run([sys.executable, "manage.py", "serve", *args], cwd=REPO_ROOT,
                          env={"PATH": "/usr/bin:/bin", "OPENCLAW_DATA_DIR": str(tmp_path), **env},
                          capture_output=True, text=True, timeout=120)


def test_several_processes_share_the_port_under_a_supervisor_and_default_to_the_cores_with_redis(tmp_path):
    redis = {"REDIS_URL": "redis://127.0.0.1:6379/15"}  # --print connects to nothing
    result = serve(tmp_path, "--port", "8123", "--processes", "3", "--print", **redis)
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[1:5] == ["-m", "openclaw_site.supervisor", "--processes", "3"]
    server = command[command.index("--") + 1:]
    assert server[1:4] == ["-m", "openclaw_site.server", "--reuse-port"] and flag(server, "-p") == "8123"
    cores = len(os.sched_getaffinity(0))
    default = serve(tmp_path, "--print", **redis).stdout.split()
    if cores > 1:
        assert flag(default, "--processes") == str(cores)
    else:
        assert "openclaw_site.supervisor" not in default
    # Without Redis, one process, as before: the server itself, its own port.
    alone = serve(tmp_path, "--print").stdout.split()
    assert alone[1:3] == ["-m", "openclaw_site.server"] and "--reuse-port" not in alone


def test_several_processes_without_redis_are_refused_with_the_reason(tmp_path):
    result = serve(tmp_path, "--processes", "2")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--processes 2 needs Redis (set REDIS_URL)" in result.stderr
    assert "per-key limits" in result.stderr


@pytest.mark.parametrize("value, message", [
    ("0", "at least 1 process is needed, not 0"),
    ("-2", "at least 1 process is needed, not -2"),
    ("two", "a whole number of processes (1 or more) is needed, not 'two'"),
    ("1.5", "a whole number of processes (1 or more) is needed, not '1.5'"),
])
def test_a_bad_number_of_processes_is_a_usage_error(tmp_path, value, message):
    result = serve(tmp_path, f"--processes={value}", "--print", REDIS_URL="redis://127.0.0.1:6379/15")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"argument --processes: {message}" in result.stderr


def test_several_processes_on_a_port_in_use_are_refused_before_any_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(tmp_path, "--port", str(port), "--processes", "2", REDIS_URL="redis://127.0.0.1:6379/15")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
