"""Settings come from the environment; production refuses to run without real secrets."""
import os
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from openclaw_site.env import env_bool, env_int
from tests.support.mockllm import REPO_ROOT


def run_settings(env: dict) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "DJANGO_"))}
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=REPO_ROOT, env={**base, "DJANGO_SETTINGS_MODULE": "openclaw_site.settings", **env},
        capture_output=True, text=True, timeout=60,
    )


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = run_settings({"OPENCLAW_MODE": "production", "OPENCLAW_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr


def test_production_refuses_to_start_without_credential_keys(tmp_path):
    result = run_settings({"OPENCLAW_MODE": "production", "DJANGO_SECRET_KEY": "x" * 50,
                           "OPENCLAW_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0 and "OPENCLAW_CREDENTIAL_KEYS" in result.stderr


def test_production_starts_with_its_secrets(tmp_path):
    from cryptography.fernet import Fernet

    result = run_settings({"OPENCLAW_MODE": "production", "DJANGO_SECRET_KEY": "x" * 50,
                           "OPENCLAW_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
                           "DJANGO_ALLOWED_HOSTS": "gateway.example.com", "OPENCLAW_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "secret_key").exists()  # never generated in production


def test_development_generates_private_secret_files(tmp_path):
    result = run_settings({"OPENCLAW_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    for name in ("secret_key", "credential_key"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600


def test_a_malformed_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("OPENCLAW_MAX_IN_FLIGHT", "lots")
    with pytest.raises(ImproperlyConfigured, match="OPENCLAW_MAX_IN_FLIGHT"):
        env_int("OPENCLAW_MAX_IN_FLIGHT", 8)
    monkeypatch.setenv("DJANGO_DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DJANGO_DEBUG"):
        env_bool("DJANGO_DEBUG")


def test_an_unknown_mode_is_refused(tmp_path):
    result = run_settings({"OPENCLAW_MODE": "prod", "OPENCLAW_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0 and "OPENCLAW_MODE" in result.stderr
