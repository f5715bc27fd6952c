"""The gateway's server command line (openclaw_site/processes.py) follows the gateway's
settings. `manage.py serve`, which runs it: tests/openclaw_site/test_serve.py."""
import subprocess
import sys

from django.test import override_settings

from openclaw_site.processes import gateway_command
from tests.support.environments import command_option as flag
from tests.support.mockllm import REPO_ROOT


def test_the_server_limits_sit_above_the_advertised_frame_limit_and_pings_follow_the_heartbeat(settings):
    with override_settings(GATEWAY={**settings.GATEWAY, "MAX_MESSAGE_BYTES": 4 * 1024 * 1024,
                                    "HEARTBEAT_SECONDS": 7}):
        command = gateway_command(host="0.0.0.0", port=9000)
    # Above the gateway's limit, so the gateway answers an oversized frame (413) before the server cuts it.
    assert int(flag(command, "--websocket-max-message-size")) == 16 * 1024 * 1024
    assert int(flag(command, "--websocket-max-frame-size")) == 16 * 1024 * 1024
    assert flag(command, "--ping-interval") == "7" and flag(command, "--ping-timeout") == "14"
    assert flag(command, "--websocket_timeout") == "-1"  # no cap on connection age
    assert flag(command, "-b") == "0.0.0.0" and flag(command, "-p") == "9000"


def test_the_server_loads_the_application_and_freezes_it_before_serving(tmp_path):
    # A full collection over the ~440,000 objects left by the imports would stall every stream.
    script = ("import gc, sys; from openclaw_site.server import freeze_startup_objects; freeze_startup_objects(); "
              "print(gc.get_freeze_count(), 'litellm' in sys.modules, 'gateway.consumers' in sys.modules)")
    env = {"PATH": "/usr/bin:/bin", "OPENCLAW_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    frozen, litellm_loaded, gateway_loaded = result.stdout.split()
    assert int(frozen) > 100_000 and litellm_loaded == "True" and gateway_loaded == "True", result.stdout
