"""Settings (openclaw_site/settings.py) come from the environment: production refuses to
run without real secrets; the backends follow DATABASE_URL and REDIS_URL; DEBUG is off
unless a developer opts in; production passes `check --deploy`, redirects to HTTPS and
sends HSTS; every page carries a Content-Security-Policy the admin works under.

Settings are read once per process, so whatever depends on the environment runs in a
subprocess (tests/support/environments.py); the admin under the policy is checked in-process.
"""
import os
import re
import subprocess
import sys

import pytest
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import connection

from tests.support.environments import deploy_env, manage, production_env, run_django
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


def test_an_unknown_mode_is_refused(tmp_path):
    result = run_settings({"OPENCLAW_MODE": "prod", "OPENCLAW_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0 and "OPENCLAW_MODE" in result.stderr


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


# --- the backends the environment names (the second pass: PostgreSQL and Redis) ---------

@pytest.mark.django_db
def test_the_database_is_the_configured_one():
    expected = "postgresql" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "sqlite"
    assert connection.vendor == expected


async def test_the_channel_layer_is_the_configured_one_and_delivers():
    layer = get_channel_layer()
    expected = "RedisChannelLayer" if os.environ.get("REDIS_URL") else "InMemoryChannelLayer"
    assert type(layer).__name__ == expected
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "control.test", "n": 1})
    assert (await layer.receive(channel))["n"] == 1


def test_the_cache_is_the_configured_one_and_counts_atomically():
    from django.core.cache import caches

    cache = caches["default"]
    assert type(cache).__name__ == ("RedisCache" if os.environ.get("REDIS_URL") else "LocMemCache")
    key = f"settings-test:{os.getpid()}"
    try:
        assert cache.add(key, 1, 60) and not cache.add(key, 1, 60) and cache.incr(key) == 2
    finally:
        cache.delete(key)


def test_the_cache_follows_redis_url_and_the_password_reset_limits_the_environment(tmp_path):
    script = ("from django.conf import settings; cache = settings.CACHES['default']\n"
              "print(cache['BACKEND'], cache.get('KEY_PREFIX', '-'), settings.PASSWORD_RESET_PER_EMAIL_HOUR,"
              " settings.PASSWORD_RESET_PER_IP_HOUR)")
    shared = run_django({"OPENCLAW_DATA_DIR": str(tmp_path), "REDIS_URL": "redis://redis.invalid:6379/5",
                         "DATABASE_URL": "postgres://gateway@db.invalid:5432/gw",
                         "OPENCLAW_PASSWORD_RESET_PER_EMAIL_HOUR": "5", "OPENCLAW_PASSWORD_RESET_PER_IP_HOUR": "20"},
                        script)
    assert shared.stdout.split() == ["django.core.cache.backends.redis.RedisCache", "openclaw:cache:gw", "5", "20"]
    embedded = run_django({"OPENCLAW_DATA_DIR": str(tmp_path)}, script)
    assert embedded.stdout.split() == ["django.core.cache.backends.locmem.LocMemCache", "-", "3", "10"]
    refused = run_settings({"OPENCLAW_DATA_DIR": str(tmp_path), "OPENCLAW_PASSWORD_RESET_PER_IP_HOUR": "0"})
    assert refused.returncode != 0 and "OPENCLAW_PASSWORD_RESET_PER_IP_HOUR must be at least 1" in refused.stderr


# --- DEBUG ---------------------------------------------------------------------------

def test_debug_is_off_unless_a_developer_opts_in(tmp_path):
    script = "from django.conf import settings; print(settings.DEBUG)"
    assert run_django({"OPENCLAW_DATA_DIR": str(tmp_path)}, script).stdout.split() == ["False"]
    assert run_django({"OPENCLAW_DATA_DIR": str(tmp_path), "DJANGO_DEBUG": "1"}, script).stdout.split() == ["True"]


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


# --- dashboard sessions and pages -----------------------------------------------------------

def test_production_sends_cookies_over_https_only_with_hsts(tmp_path):
    script = ("from django.conf import settings as s; print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
              "s.SESSION_COOKIE_HTTPONLY, s.SECURE_HSTS_SECONDS)")
    assert run_django(deploy_env(tmp_path), script).stdout.split() == ["True", "True", "True", "31536000"]
    development = run_django({"OPENCLAW_DATA_DIR": str(tmp_path / "dev")}, script)
    assert development.stdout.split() == ["False", "False", "True", "0"]  # plain http://127.0.0.1 must work


def _directives(policy: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


@pytest.mark.django_db
def test_dashboard_pages_may_connect_only_to_their_own_origin(client):
    from tests.support.personas import make_personas

    personas = make_personas()
    for url in ("/accounts/login/", f"/orgs/{personas.org.slug}/"):
        page = personas.client_for(client, "member").get(url) if url != "/accounts/login/" else client.get(url)
        assert page.status_code == 200, url
        policy = _directives(page["Content-Security-Policy"])
        # 'self' covers ws:// and wss:// to the same host (the playground's socket).
        assert policy["connect-src"] == ["'self'"]
        for directive in ("default-src", "script-src", "style-src", "font-src", "form-action"):
            assert policy[directive] == ["'self'"], directive
        assert policy["img-src"] == ["'self'", "data:"] and policy["frame-ancestors"] == ["'none'"]
        assert not re.search(r"https?://", page["Content-Security-Policy"])
        html = page.content.decode()
        assert executable_inline_scripts(html) == [] and not re.search(r"\sstyle=\"", html), url


def test_a_rollup_grace_shorter_than_lease_expiry_and_two_intervals_is_refused(tmp_path):
    env = {"OPENCLAW_DATA_DIR": str(tmp_path), "OPENCLAW_BUDGET_LEASE_SECONDS": "600",
           "OPENCLAW_ROLLUP_INTERVAL_SECONDS": "300"}
    refused = run_settings({**env, "OPENCLAW_ROLLUP_GRACE_SECONDS": "1200"})
    assert refused.returncode != 0 and "OPENCLAW_ROLLUP_GRACE_SECONDS must be at least" in refused.stderr
    assert run_settings({**env, "OPENCLAW_ROLLUP_GRACE_SECONDS": "1500"}).stdout.strip() == "started"
