"""`manage.py serve` (openclaw_site/management/commands/serve.py): one production gateway
process, daphne with the flags the environment's settings give (built by
openclaw_site/processes.py); `--print` shows the command instead of running it."""
import subprocess
import sys

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
