"""Security settings: private data files, plain 400 for bad hosts, production's deploy checks, CSP.

Settings are read once per process, so whatever depends on the environment runs in a
subprocess (as in test_settings.py); the admin under the policy is checked in-process.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from tests.support.mockllm import REPO_ROOT
from tests.unit.test_settings import production_env


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


# --- the data directory -----------------------------------------------------------------

def test_a_fresh_data_directory_is_private_after_migrate(tmp_path):
    data_dir = tmp_path / "var"  # created by the gateway, not by the test
    result = manage({"OPENCLAW_DATA_DIR": str(data_dir)}, "migrate", "--noinput", "-v", "0")
    assert result.returncode == 0, result.stderr
    assert mode_of(data_dir) == 0o700
    files = {path.name: mode_of(path) for path in data_dir.iterdir()}
    assert {"openclaw.sqlite3", "celery-broker.sqlite3", "celery-results.sqlite3", "secret_key",
            "credential_key"} <= set(files)
    assert set(files.values()) == {0o600}, files


def test_an_existing_installations_world_readable_files_are_fixed_at_start(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    for name in ("openclaw.sqlite3", "openclaw.sqlite3-wal", "openclaw.sqlite3-shm", "celerybeat-schedule"):
        (data_dir / name).write_bytes(b"")
        os.chmod(data_dir / name, 0o644)
    result = run_django({"OPENCLAW_DATA_DIR": str(data_dir)}, "print('started')")
    assert result.returncode == 0, result.stderr
    assert mode_of(data_dir) == 0o700
    assert {path.name: mode_of(path) for path in data_dir.iterdir() if path.name.startswith(("openclaw", "celerybeat"))} \
        == dict.fromkeys(["openclaw.sqlite3", "openclaw.sqlite3-wal", "openclaw.sqlite3-shm", "celerybeat-schedule"],
                         0o600)


def test_sqlite_gives_its_wal_and_shm_files_the_database_files_mode(tmp_path):
    # Why creating the database file 0600 first is enough (openclaw_site/datadir.py).
    import sqlite3

    from openclaw_site.datadir import secure_data_dir

    database = tmp_path / "data" / "db.sqlite3"
    secure_data_dir(database.parent, [database])
    previous = os.umask(0o022)
    try:
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE t (a)")
            assert mode_of(database.with_name("db.sqlite3-wal")) == 0o600
            assert mode_of(database.with_name("db.sqlite3-shm")) == 0o600
        conn.close()
    finally:
        os.umask(previous)


# --- bad hosts and DEBUG ----------------------------------------------------------------

def test_debug_is_off_unless_a_developer_opts_in(tmp_path):
    script = "from django.conf import settings; print(settings.DEBUG)"
    assert run_django({"OPENCLAW_DATA_DIR": str(tmp_path)}, script).stdout.split() == ["False"]
    assert run_django({"OPENCLAW_DATA_DIR": str(tmp_path), "DJANGO_DEBUG": "1"}, script).stdout.split() == ["True"]


@pytest.mark.parametrize("debug", [True, False], ids=["debug-on", "debug-off"])
def test_a_bad_host_gets_a_plain_400_never_the_technical_page(client, debug):
    with override_settings(DEBUG=debug):
        response = client.get("/admin/login/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "DisallowedHost" not in body and "settings" not in body.lower() and "Traceback" not in body
    assert len(body) < 200


# --- production mode: check --deploy, HTTPS redirect, HSTS ------------------------------

def test_production_passes_check_deploy_with_its_required_environment(tmp_path):
    result = manage(deploy_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout, result.stdout + result.stderr


def test_check_deploy_does_warn_when_hsts_and_the_redirect_are_turned_off(tmp_path):
    # The check above can fail: turning the protections off is reported.
    result = manage(deploy_env(tmp_path, DJANGO_SECURE_HSTS_SECONDS="0", DJANGO_SECURE_SSL_REDIRECT="0"),
                    "check", "--deploy")
    assert "security.W004" in result.stderr + result.stdout and "security.W008" in result.stderr + result.stdout


_REQUESTS = """
from django.test import Client
client = Client(HTTP_HOST="gateway.example.com")
def show(name, response):
    print(name, response.status_code, response.get("Location", "-"), response.get("Strict-Transport-Security", "-"),
          "csp" if "Content-Security-Policy" in response else "no-csp", sep="|")
show("http-admin", client.get("/admin/login/"))
show("http-healthz", client.get("/healthz"))
show("https-admin", client.get("/admin/login/", secure=True))
show("proxied-admin", client.get("/admin/login/", HTTP_X_FORWARDED_PROTO="https"))
"""


def answers(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    assert result.returncode == 0, result.stderr
    return {line.split("|")[0]: line.split("|")[1:] for line in result.stdout.splitlines() if "|" in line}


def test_production_redirects_plain_http_to_https_except_the_health_endpoints_and_sends_hsts(tmp_path):
    seen = answers(run_django(deploy_env(tmp_path), _REQUESTS))
    assert seen["http-admin"][:2] == ["301", "https://gateway.example.com/admin/login/"]
    assert seen["http-healthz"][0] == "200"  # load balancers probe over plain HTTP
    status, _, hsts, csp = seen["https-admin"]
    assert status == "200" and hsts == "max-age=31536000; includeSubDomains; preload" and csp == "csp"
    # Without DJANGO_SECURE_PROXY_SSL_HEADER a client's X-Forwarded-Proto is not believed.
    assert seen["proxied-admin"][0] == "301"


def test_behind_a_tls_proxy_its_header_is_trusted_and_hsts_follows_the_settings(tmp_path):
    env = deploy_env(tmp_path, DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", DJANGO_SECURE_HSTS_SECONDS="600",
                     DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="0", DJANGO_SECURE_HSTS_PRELOAD="0")
    seen = answers(run_django(env, _REQUESTS))
    assert seen["proxied-admin"][:3] == ["200", "-", "max-age=600"]


def test_the_https_redirect_can_be_left_to_the_proxy(tmp_path):
    seen = answers(run_django(deploy_env(tmp_path, DJANGO_SECURE_SSL_REDIRECT="0"), _REQUESTS))
    assert seen["http-admin"][:2] == ["200", "-"]


def test_a_malformed_proxy_header_setting_stops_the_process(tmp_path):
    result = run_django(deploy_env(tmp_path, DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https"), "")
    assert result.returncode != 0 and "DJANGO_SECURE_PROXY_SSL_HEADER" in result.stderr.strip().splitlines()[-1]


# --- the Content-Security-Policy and the admin under it --------------------------------

def executable_inline_scripts(html: str) -> list[str]:
    """<script> elements a `script-src 'self'` policy would block: inline and not a JSON data block."""
    tags = re.findall(r"<script\b[^>]*>", html)
    return [tag for tag in tags if "src=" not in tag and "application/json" not in tag]


@pytest.mark.django_db
def test_the_admin_renders_and_works_under_the_policy(client):
    login_page = client.get("/admin/login/")
    policy = login_page["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    get_user_model().objects.create_superuser("operator", "op@example.com", "correct-horse-battery")
    logged_in = client.post("/admin/login/?next=/admin/", {"username": "operator", "password": "correct-horse-battery",
                                                           "next": "/admin/"})
    assert logged_in.status_code == 302 and logged_in["Location"] == "/admin/"
    for url in ("/admin/login/", "/admin/", "/admin/tenants/organization/", "/admin/tenants/organization/add/",
                "/admin/catalog/deployment/add/", "/admin/billing/budget/"):
        page = client.get(url) if url != "/admin/login/" else login_page
        assert page.status_code == 200, url
        assert "Content-Security-Policy" in page, url
        html = page.content.decode()
        assert executable_inline_scripts(html) == [], url
        assert not re.search(r"\sstyle=\"", html) and " onclick=" not in html and "javascript:" not in html, url


def test_the_health_endpoint_answers_as_before_under_the_policy(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
