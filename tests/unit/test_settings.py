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


def production_env(tmp_path, **overrides) -> dict:
    """A production environment that starts; each test breaks exactly one thing in it."""
    from cryptography.fernet import Fernet

    env = {"OPENCLAW_MODE": "production", "DJANGO_SECRET_KEY": "x" * 50,
           "OPENCLAW_CREDENTIAL_KEYS": Fernet.generate_key().decode(),
           "DJANGO_ALLOWED_HOSTS": "gateway.example.com", "OPENCLAW_DATA_DIR": str(tmp_path)}
    env.update(overrides)
    return {name: value for name, value in env.items() if value is not None}


def assert_refused(result: subprocess.CompletedProcess, variable: str) -> None:
    assert result.returncode != 0 and "started" not in result.stdout, result.stdout
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("django.core.exceptions.ImproperlyConfigured:") and variable in last_line, \
        result.stderr[-2000:]


@pytest.mark.parametrize("secret_key", [
    "x" * 31,                                   # too short to be random enough
    "django-insecure-" + "k" * 50,              # startproject's placeholder, however long
], ids=["short", "django-insecure"])
def test_production_refuses_a_weak_secret_key(tmp_path, secret_key):
    assert_refused(run_settings(production_env(tmp_path, DJANGO_SECRET_KEY=secret_key)), "DJANGO_SECRET_KEY")


@pytest.mark.parametrize("mode", ["production", "development"])
@pytest.mark.parametrize("keys,position", [
    ("x", "key 1 of 1"),
    ("bm90LWEtZmVybmV0LWtleQ", "key 1 of 1"),    # valid base64, wrong length
    ("{valid},bm90LWEtZmVybmV0LWtleQ", "key 2 of 2"),  # every key is checked, not only the newest
], ids=["x", "short-base64", "second-of-two"])
def test_invalid_credential_keys_are_refused_at_start(tmp_path, mode, keys, position):
    from cryptography.fernet import Fernet

    keys = keys.format(valid=Fernet.generate_key().decode())
    result = run_settings(production_env(tmp_path, OPENCLAW_MODE=mode, OPENCLAW_CREDENTIAL_KEYS=keys))
    assert_refused(result, "OPENCLAW_CREDENTIAL_KEYS")
    assert position in result.stderr and "not a Fernet key" in result.stderr
    assert "bm90LWEtZmVybmV0LWtleQ" not in result.stderr  # a key, even a broken one, is never echoed


def test_a_corrupted_generated_credential_key_is_refused_naming_its_file(tmp_path):
    (tmp_path / "credential_key").write_text("truncated\n")
    result = run_settings({"OPENCLAW_DATA_DIR": str(tmp_path)})
    assert_refused(result, str(tmp_path / "credential_key"))


@pytest.mark.parametrize("hosts", [None, "", " , "], ids=["unset", "empty", "only-separators"])
def test_production_refuses_to_start_without_allowed_hosts(tmp_path, hosts):
    # docs/operations.md: production refuses to start without DJANGO_ALLOWED_HOSTS
    # (development falls back to loopback names; production has no safe default).
    assert_refused(run_settings(production_env(tmp_path, DJANGO_ALLOWED_HOSTS=hosts)), "DJANGO_ALLOWED_HOSTS")


def test_production_starts_with_several_valid_credential_keys(tmp_path):
    from cryptography.fernet import Fernet

    keys = ",".join(Fernet.generate_key().decode() for _ in range(3))
    result = run_settings(production_env(tmp_path, OPENCLAW_CREDENTIAL_KEYS=keys))
    assert result.returncode == 0 and "started" in result.stdout, result.stderr[-2000:]
