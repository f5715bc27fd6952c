"""Start-up never reaches for the network: settings, the ASGI application and litellm's price map.

Named after openclaw_site/asgi.py, the application a gateway process builds at start-up;
what keeps litellm local is set in openclaw_site/settings.py and catalog/litellm_setup.py.

The check runs in a fresh interpreter whose socket layer refuses (and records) every
attempt to resolve or reach a host that is not this machine, with nothing in the
environment telling litellm to stay local: only the project itself may do that.
"""
import json
import os
import subprocess
import sys
import textwrap

from tests.support.mockllm import REPO_ROOT

# Installed before Django or litellm is imported. A blocked attempt raises OSError, which
# litellm would swallow (it falls back to its bundled map): so attempts are recorded and
# reported, not merely refused.
START_UP = textwrap.dedent("""
    import ipaddress, json, socket

    attempts = []
    LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain"}

    def is_local(host):
        if isinstance(host, bytes):
            host = host.decode()
        if host in LOCAL_NAMES:
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def refuse(what, host):
        attempts.append(f"{what} {host}")
        raise OSError(f"network access during start-up: {what} {host}")

    real_getaddrinfo, real_connect, real_connect_ex = (
        socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex)
    real_create_connection = socket.create_connection

    def getaddrinfo(host, *args, **kwargs):
        if not is_local(host):
            refuse("getaddrinfo", host)
        return real_getaddrinfo(host, *args, **kwargs)

    def create_connection(address, *args, **kwargs):
        if not is_local(address[0]):
            refuse("create_connection", address[0])
        return real_create_connection(address, *args, **kwargs)

    def guarded(real):
        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(address[0]):
                refuse("connect", address[0])
            return real(self, address)
        return connect

    socket.getaddrinfo = getaddrinfo
    socket.create_connection = create_connection
    socket.socket.connect = guarded(real_connect)
    socket.socket.connect_ex = guarded(real_connect_ex)

    import django
    django.setup()
    from openclaw_site.asgi import application
    import litellm
    from gateway.providers import warm_up
    warm_up()  # what the gateway process does before serving

    print(json.dumps({"attempts": attempts, "models_priced": len(litellm.model_cost),
                      "application": type(application).__name__}))
""")

# Variables that would make the process local (or remote) regardless of the settings module.
_SCRUBBED_PREFIXES = ("OPENCLAW_", "DJANGO_", "LITELLM_", "HF_", "CELERY_")
_SCRUBBED = {"DATABASE_URL", "REDIS_URL"}


def test_start_up_reaches_for_no_host_but_this_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(DJANGO_SETTINGS_MODULE="openclaw_site.settings", OPENCLAW_DATA_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", START_UP], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], report["attempts"]
    assert report["application"] == "ProtocolTypeRouter"
    # litellm's bundled price map was loaded (thousands of models), not an empty one.
    assert report["models_priced"] > 1000
