"""OpenClaw Gateway settings, driven by environment variables.

With no variables at all this is the *embedded default*: SQLite, the in-memory
channel layer, a Celery broker on an SQLite file, and secrets generated into
files under OPENCLAW_DATA_DIR (mode 0600, outside git).

Production mode (OPENCLAW_MODE=production) refuses to start unless the secret
key and the credential-encryption keys are given explicitly. See
docs/operations.md for every variable.
"""
from __future__ import annotations

import os
import re
import tempfile
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp import constants as csp
from django.core.exceptions import ImproperlyConfigured

from openclaw_site.datadir import secure_data_dir, sqlite_path_of

from openclaw_site.env import (
    check_fernet_keys,
    env_bool,
    env_int,
    env_list,
    env_networks,
    env_str,
    new_django_secret,
    read_or_create_secret_file,
)

# litellm fetches its price map from the network at import unless told not to;
# the gateway never reaches for the network at start-up.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("OPENCLAW_DATA_DIR", str(BASE_DIR / "var"))).resolve()

MODE = env_str("OPENCLAW_MODE", "development")
if MODE not in {"development", "production"}:
    raise ImproperlyConfigured(f"OPENCLAW_MODE must be 'development' or 'production', got {MODE!r}")
PRODUCTION = MODE == "production"
# Off unless a developer opts in (DJANGO_DEBUG=1), in both modes: DEBUG pages show
# settings and paths to whoever triggers them, and DEBUG keeps every SQL query in memory.
DEBUG = env_bool("DJANGO_DEBUG", default=False)


def _credential_key_default() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


if PRODUCTION:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY")
    if len(SECRET_KEY) < 32 or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured(
            "production mode needs DJANGO_SECRET_KEY (at least 32 random characters, not a django-insecure- key)"
        )
    CREDENTIAL_KEYS = check_fernet_keys(env_list("OPENCLAW_CREDENTIAL_KEYS"), "OPENCLAW_CREDENTIAL_KEYS")
    if not CREDENTIAL_KEYS:
        raise ImproperlyConfigured(
            "production mode needs OPENCLAW_CREDENTIAL_KEYS (comma-separated Fernet keys, newest first)"
        )
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured(
            "production mode needs DJANGO_ALLOWED_HOSTS (comma-separated host names the gateway is served as)"
        )
else:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY") or read_or_create_secret_file(
        DATA_DIR / "secret_key", new_django_secret
    )
    _credential_key_file = DATA_DIR / "credential_key"
    CREDENTIAL_KEYS = check_fernet_keys(env_list("OPENCLAW_CREDENTIAL_KEYS"), "OPENCLAW_CREDENTIAL_KEYS") or (
        check_fernet_keys([read_or_create_secret_file(_credential_key_file, _credential_key_default)],
                          str(_credential_key_file))
    )
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    # The project's apps, lowest layer first (docs/architecture.md).
    "tenants",
    "catalog",
    "billing",
    "gateway",
    "openclaw_site",  # the process entry points: run_gateway, serve, setup_demo, mockllm
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "openclaw_site.urls"
ASGI_APPLICATION = "openclaw_site.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "tenants.context.dashboard",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600, minimum=0),
            conn_health_checks=True,
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "openclaw.sqlite3",
            "OPTIONS": {
                # WAL lets readers proceed during a write; IMMEDIATE takes the
                # write lock at BEGIN so two writers queue instead of failing
                # half-way with "database is locked".
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Tests use a file, like the embedded default itself: an in-memory shared-cache
    # database locks whole tables across threads ("database table is locked",
    # with no busy wait), which the gateway's separate usage-writer thread hits.
    # One file per test run, so two runs side by side do not share it.
    DATABASES["default"]["TEST"] = {
        "NAME": env_str("OPENCLAW_TEST_DB_NAME")
        or str(Path(tempfile.gettempdir()) / f"openclaw-test-{os.getpid()}.sqlite3"),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis, channel layer, Celery -------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # Group membership outlives daphne's longest connection: sockets are
            # never closed for age, and revocation broadcasts go to groups.
            # redis-py 8 reads with a 5 s socket timeout, exactly channels-redis's
            # 5 s blocking pop: an idle consumer would crash (close 1011). Keep the
            # socket timeout well above the blocking pop.
            "CONFIG": {"hosts": [{"address": REDIS_URL, "socket_timeout": 30}], "group_expiry": 30 * 86400},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Django's cache keeps counts every process must share (the password-reset limits): in
# Redis when configured (keys "openclaw:cache:<database>:…"), else in this process's memory,
# which is exact for the embedded default's single process.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": f"openclaw:cache:{DATABASES['default']['NAME']}"}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# Celery with no broker configured silently uses amqp://localhost: always set it.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or f"sqla+sqlite:///{DATA_DIR / 'celery-broker.sqlite3'}"
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or REDIS_URL or f"db+sqlite:///{DATA_DIR / 'celery-results.sqlite3'}"
CELERY_TASK_ALWAYS_EAGER = False
# Deployments (or test stacks) sharing one Redis keep their tasks apart by queue name.
CELERY_TASK_DEFAULT_QUEUE = env_str("OPENCLAW_CELERY_QUEUE") or "celery"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Usage rollups (billing/rollups.py, docs/operations.md "Usage rollups"): every interval,
# beat rebuilds the open hour and every hour back to the grace window, so records written
# late (a reaped lease, a dead-letter replay) still land in their hour.
USAGE_ROLLUP_INTERVAL_SECONDS = env_int("OPENCLAW_ROLLUP_INTERVAL_SECONDS", 300, minimum=10)
USAGE_ROLLUP_GRACE_SECONDS = env_int("OPENCLAW_ROLLUP_GRACE_SECONDS", 7200, minimum=600)
# Monthly billing reports (billing/reports.py, docs/billing.md): drafts refreshed every
# interval; a month's report becomes final BILLING_GRACE_SECONDS after the month ends.
BILLING_REPORT_INTERVAL_SECONDS = env_int("OPENCLAW_BILLING_REPORT_INTERVAL_SECONDS", 300, minimum=10)
BILLING_GRACE_SECONDS = env_int("OPENCLAW_BILLING_GRACE_SECONDS", 6 * 3600, minimum=600)
CELERY_BEAT_SCHEDULE = {
    "rollup-usage": {
        "task": "billing.tasks.rollup_usage",
        "schedule": USAGE_ROLLUP_INTERVAL_SECONDS,
    },
    "refresh-billing-reports": {
        "task": "billing.tasks.refresh_billing_reports",
        "schedule": BILLING_REPORT_INTERVAL_SECONDS,
    },
    "reconcile-billing": {
        "task": "billing.tasks.reconcile_billing",
        "schedule": 86400,
    },
    "purge-playground-keys": {
        "task": "tenants.tasks.purge_playground_keys",
        "schedule": 3600,
    },
}
# The dashboard playground's short-lived keys (tenants/playground_keys.py).
PLAYGROUND_KEY_SECONDS = env_int("OPENCLAW_PLAYGROUND_KEY_SECONDS", 600, minimum=60)

# --- Gateway ------------------------------------------------------------------
GATEWAY = {
    # Advertised in auth_ok and enforced.
    "MAX_MESSAGE_BYTES": env_int("OPENCLAW_MAX_MESSAGE_BYTES", 256 * 1024, minimum=1024),
    "MAX_IN_FLIGHT": env_int("OPENCLAW_MAX_IN_FLIGHT", 8, minimum=1),
    "MAX_CONNECTIONS_PER_KEY": env_int("OPENCLAW_MAX_CONNECTIONS_PER_KEY", 100, minimum=1),
    # SIGTERM: stop taking requests, let in-flight ones finish up to this long, close 1001.
    "SHUTDOWN_DRAIN_SECONDS": env_int("OPENCLAW_SHUTDOWN_DRAIN_SECONDS", 10, minimum=0),
    "AUTH_TIMEOUT_SECONDS": env_int("OPENCLAW_AUTH_TIMEOUT_SECONDS", 10, minimum=1),
    # Slowloris: a client must send a whole HTTP request head (and body) within this
    # long of connecting, or get 408 and be closed (openclaw_site/server.py).
    "REQUEST_HEAD_TIMEOUT_SECONDS": env_int("OPENCLAW_REQUEST_HEAD_TIMEOUT_SECONDS", 10, minimum=1),
    "HEARTBEAT_SECONDS": env_int("OPENCLAW_HEARTBEAT_SECONDS", 20, minimum=1),
    # Used when a request names no max_tokens; always clamped by the deployment.
    "DEFAULT_MAX_TOKENS": env_int("OPENCLAW_DEFAULT_MAX_TOKENS", 1024, minimum=1),
    # Prompts too big to count on the event loop are counted on a pool of their own, at
    # most this many per org at once (docs/token-control.md).
    "TOKEN_COUNT_THREADS": env_int("OPENCLAW_TOKEN_COUNT_THREADS", 4, minimum=1),
    "TOKEN_COUNTS_PER_ORG": env_int("OPENCLAW_TOKEN_COUNTS_PER_ORG", 1, minimum=1),
    # Budget reservations are leases: extended this often while a request runs, and
    # settled from their checkpoint by another process when not extended for
    # BUDGET_LEASE_SECONDS (their process died). See docs/budgets.md.
    "BUDGET_LEASE_SECONDS": env_int("OPENCLAW_BUDGET_LEASE_SECONDS", 30, minimum=2),
    "BUDGET_LEASE_EXTEND_SECONDS": env_int("OPENCLAW_BUDGET_LEASE_EXTEND_SECONDS", 1, minimum=1),
    # A request whose budget room is held by reservations in flight waits this long for
    # them to settle before it is answered 429 budget_busy (docs/budgets.md).
    "BUDGET_BUSY_WAIT_MS": env_int("OPENCLAW_BUDGET_BUSY_WAIT_MS", 1500, minimum=0),
    # The lean read of OpenAI-format streams (gateway/providers.py): 0 sends every
    # stream through litellm's stream wrapper, whatever the deployments say.
    "LEAN_STREAM": env_bool("OPENCLAW_LEAN_STREAM", True),
}
# A reaped lease writes its record up to BUDGET_LEASE_SECONDS (plus a reaper pass) after
# the request stopped; the rollup must still be recomputing that hour then.
if USAGE_ROLLUP_GRACE_SECONDS < GATEWAY["BUDGET_LEASE_SECONDS"] + 2 * USAGE_ROLLUP_INTERVAL_SECONDS + 300:
    raise ImproperlyConfigured(
        "OPENCLAW_ROLLUP_GRACE_SECONDS must be at least OPENCLAW_BUDGET_LEASE_SECONDS + "
        "2 x OPENCLAW_ROLLUP_INTERVAL_SECONDS + 300 (records written late must still reach their hour's rollup), "
        f"got {USAGE_ROLLUP_GRACE_SECONDS}"
    )
# A month's report is final only once its last hours can no longer move in the rollups:
# after the rollup grace window, which itself outlasts a lease's expiry, plus a refresh.
if BILLING_GRACE_SECONDS <= (USAGE_ROLLUP_GRACE_SECONDS + GATEWAY["BUDGET_LEASE_SECONDS"]
                             + BILLING_REPORT_INTERVAL_SECONDS):
    raise ImproperlyConfigured(
        "OPENCLAW_BILLING_GRACE_SECONDS must be longer than OPENCLAW_ROLLUP_GRACE_SECONDS + "
        "OPENCLAW_BUDGET_LEASE_SECONDS + OPENCLAW_BILLING_REPORT_INTERVAL_SECONDS (a report must not become final "
        f"while its month's rollups may still change), got {BILLING_GRACE_SECONDS}"
    )

# --- Failed logins: API-key throttling, admin lockout, client addresses ------------------
# (docs/operations.md "Failed authentication and logins"; gateway/auth_throttle.py,
# tenants/auth_audit.py, tenants/login_audit.py, infra/client_address.py)
GATEWAY.update({
    # Past this many failed authentications within the window (which starts at the first
    # failure), further attempts are refused 429 / close 4429 until the window ends: from
    # one client address, or with one key lookup (wrong secrets only).
    "AUTH_FAILURE_WINDOW_SECONDS": env_int("OPENCLAW_AUTH_FAILURE_WINDOW_SECONDS", 60, minimum=1),
    "AUTH_FAILURES_PER_ADDRESS": env_int("OPENCLAW_AUTH_FAILURES_PER_ADDRESS", 30, minimum=1),
    "AUTH_FAILURES_PER_KEY": env_int("OPENCLAW_AUTH_FAILURES_PER_KEY", 10, minimum=1),
    # A burst of failed logins is audited as its first event, then one summary per window.
    "AUTH_AUDIT_SUMMARY_SECONDS": env_int("OPENCLAW_AUTH_AUDIT_SUMMARY_SECONDS", 60, minimum=1),
})
# Proxies (CIDRs) whose X-Forwarded-For is believed; empty: the TCP peer is the client.
TRUSTED_PROXIES = env_networks("OPENCLAW_TRUSTED_PROXIES")

# Logins (dashboard and admin): django-axes locks a username at one address out after repeated failures.
INSTALLED_APPS += ["axes"]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out login before the password is checked
    "django.contrib.auth.backends.ModelBackend",
]
MIDDLEWARE += ["axes.middleware.AxesMiddleware"]  # last, as axes requires: turns a lockout into its response
AXES_FAILURE_LIMIT = env_int("OPENCLAW_ADMIN_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_COOLOFF_TIME = timedelta(minutes=env_int("OPENCLAW_ADMIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_RESET_ON_SUCCESS = True
# Attempts during a lockout do not push its end further out: the cool-off ends on time.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "infra.client_address.from_request"
AXES_HTTP_RESPONSE_CODE = 429
AXES_COOLOFF_MESSAGE = (f"Too many failed logins for this username from this address: locked out for "
                        f"{int(AXES_COOLOFF_TIME.total_seconds()) // 60} minutes. Try again later, or ask an operator "
                        f"to unlock it (manage.py axes_reset_username).")
# The dashboard's and the admin's login pages answer a lockout with this page (429).
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"
AXES_ENABLE_ACCESS_FAILURE_LOG = False
AXES_DISABLE_ACCESS_LOG = True  # logins are audited in the platform audit chain instead

# Password-reset requests (tenants/password_reset.py): at most this many per hour for one
# email address (whether or not an account uses it) and from one client address; past
# either, no email is sent and the page answers 429. Counted in the cache (above).
PASSWORD_RESET_PER_EMAIL_HOUR = env_int("OPENCLAW_PASSWORD_RESET_PER_EMAIL_HOUR", 3, minimum=1)
PASSWORD_RESET_PER_IP_HOUR = env_int("OPENCLAW_PASSWORD_RESET_PER_IP_HOUR", 10, minimum=1)

# --- Email and webhooks (budget notifications, docs/token-control.md) ---------------
# Development prints mail on the worker's console; production sends it over SMTP.
EMAIL_BACKEND = env_str("OPENCLAW_EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend" if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend")
EMAIL_FILE_PATH = env_str("OPENCLAW_EMAIL_FILE_PATH") or str(DATA_DIR / "mail")  # the file backend's directory
EMAIL_HOST = env_str("OPENCLAW_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("OPENCLAW_EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("OPENCLAW_EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("OPENCLAW_EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("OPENCLAW_EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("OPENCLAW_EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("set OPENCLAW_EMAIL_USE_TLS (STARTTLS) or OPENCLAW_EMAIL_USE_SSL, not both")
EMAIL_TIMEOUT = env_int("OPENCLAW_EMAIL_TIMEOUT", 10, minimum=1)
DEFAULT_FROM_EMAIL = env_str("OPENCLAW_EMAIL_FROM") or "OpenClaw Gateway <noreply@localhost>"
# Networks webhooks may reach although private/loopback/link-local (comma-separated CIDRs).
WEBHOOK_ALLOWED_NETWORKS = env_networks("OPENCLAW_WEBHOOK_ALLOWED_NETWORKS")

# --- Django REST framework --------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

# --- The rest ----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Static files (the dashboard's stylesheet and scripts, the admin's) are served by the
# gateway process itself through WhiteNoise, in both modes: no web server to configure.
# Files are found where they live (WHITENOISE_USE_FINDERS), so nothing must be collected
# first; `manage.py collectstatic` into STATIC_ROOT is optional in production.
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "whitenoise.middleware.WhiteNoiseMiddleware")

# --- Dashboard sign-in (docs/dashboard.md) -----------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("OPENCLAW_SESSION_SECONDS", 12 * 3600, minimum=60)
# Invitation and password-reset links stay valid this long.
PASSWORD_RESET_TIMEOUT = env_int("OPENCLAW_INVITATION_SECONDS", 3 * 86400, minimum=300)

# --- Security: file modes, bad hosts, HTTPS, HSTS, Content-Security-Policy -------------
# (docs/operations.md, "Security settings"). Production mode passes `manage.py check --deploy`.

# The data directory holds the embedded database (live sessions), broker files and
# development secrets: 0700, its files 0600, fixed at every start.
_sqlite_files = [path for path in (
    sqlite_path_of(DATABASES["default"]["NAME"]) if DATABASES["default"]["ENGINE"].endswith("sqlite3") else None,
    sqlite_path_of(CELERY_BROKER_URL),
    sqlite_path_of(CELERY_RESULT_BACKEND),
) if path is not None]
secure_data_dir(DATA_DIR, _sqlite_files, create=not PRODUCTION or bool(_sqlite_files))
# WhiteNoise serves STATIC_ROOT too (what `collectstatic` put there) and warns when it is
# missing; in the embedded default it lives, empty, in the data directory.
if not PRODUCTION and not STATIC_ROOT.exists():
    STATIC_ROOT.mkdir(mode=0o700, exist_ok=True)

# A request with a Host outside ALLOWED_HOSTS gets a plain 400, never DEBUG's technical page.
MIDDLEWARE = ["openclaw_site.hosts.refuse_bad_hosts", *MIDDLEWARE]

# Behind a TLS-terminating proxy: the header it sets to "https" on HTTPS requests (e.g.
# X-Forwarded-Proto). Only when the proxy always sets or overwrites it: a client could send it.
_proxy_ssl_header = env_str("DJANGO_SECURE_PROXY_SSL_HEADER").strip()
if _proxy_ssl_header:
    if not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_ssl_header):
        raise ImproperlyConfigured(
            f"DJANGO_SECURE_PROXY_SSL_HEADER must be a header name such as X-Forwarded-Proto, got {_proxy_ssl_header!r}")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")

if PRODUCTION:
    SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", True)
    CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")
    # Plain-HTTP requests are redirected to HTTPS, except the health endpoints (load
    # balancers probe them over HTTP). WebSocket upgrades are not redirected.
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
    SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 365 * 86400, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)

# Content-Security-Policy on every response (django-csp 4 settings format). The admin
# needs nothing but its own scripts, styles and images (its inline <script> blocks are
# JSON data, which CSP does not block).
INSTALLED_APPS = [*INSTALLED_APPS, "csp"]
MIDDLEWARE.insert(MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
                  "csp.middleware.CSPMiddleware")
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [csp.SELF],
        "script-src": [csp.SELF],
        "style-src": [csp.SELF],
        "img-src": [csp.SELF, "data:"],
        "font-src": [csp.SELF],
        "connect-src": [csp.SELF],
        "object-src": [csp.NONE],
        "base-uri": [csp.NONE],
        "frame-ancestors": [csp.NONE],
        "form-action": [csp.SELF],
    },
}
# --- end of the security block ----------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("OPENCLAW_LOG_LEVEL", "INFO")},
    "loggers": {
        "LiteLLM": {"level": "WARNING"},
        "httpx": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
