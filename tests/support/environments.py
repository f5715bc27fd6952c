"""Django in a fresh interpreter under a given environment: settings are read once per
process, so whatever depends on the environment is checked in a subprocess."""
import os
import secrets
import subprocess
import sys
from pathlib import Path

from tests.support.mockllm import REPO_ROOT


def production_env(tmp_path, **overrides) -> dict:
    """A production environment that starts; each test breaks exactly one thing in it."""
    from cryptography.fernet import Fernet

    env = {"OPENCLAW_MODE": "production", "DJANGO_SECRET_KEY": "x" * 50,
           "OPENCLAW_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
           "DJANGO_ALLOWED_HOSTS": "gateway.example.com", "OPENCLAW_DATA_DIR": str(tmp_path)}
    env.update(overrides)
    return {name: value for name, value in env.items() if value is not None}


def clean_env(env: dict) -> dict:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("OPENCLAW_", "DJANGO_")) and k not in ("DATABASE_URL", "REDIS_URL")}
    return {**base, **env}


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=clean_env(env),
                          capture_output=True, text=True, timeout=120)


def run_django(env: dict, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + script], cwd=REPO_ROOT,
                          env=clean_env({"DJANGO_SETTINGS_MODULE": "openclaw_site.settings", **env}),
                          capture_output=True, text=True, timeout=120)


def deploy_env(tmp_path: Path, **overrides) -> dict:
    # A random secret key: check --deploy rightly flags "x" * 50 (too few unique characters).
    return production_env(tmp_path, DJANGO_SECRET_KEY=secrets.token_urlsafe(50), **overrides)


def command_option(command: list[str], name: str) -> str:
    """The value given to option `name` in a command line (`--port 8123` → "8123")."""
    return command[command.index(name) + 1]
