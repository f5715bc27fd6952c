"""Small, strict readers for settings that come from environment variables.

A malformed value stops the process with a message naming the variable, rather
than silently falling back to a default.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false, yes/no), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_networks(name: str) -> list[str]:
    """A comma-separated list of CIDRs (e.g. trusted proxies); stop at start on a bad one."""
    networks = env_list(name)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be comma-separated CIDRs, got {network!r}") from None
    return networks


def check_fernet_keys(keys: list[str], source: str) -> list[str]:
    """Return `keys` if each is a Fernet key; otherwise stop, naming `source` and the entry.

    Checked at start-up: a bad key would otherwise surface only when the first
    provider credential is encrypted or decrypted, mid-request. The key itself is
    never echoed (it may be a real key with a typo).
    """
    from cryptography.fernet import Fernet

    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key)
        except ValueError:
            raise ImproperlyConfigured(
                f"{source}: key {position} of {len(keys)} is not a Fernet key (32 url-safe base64-encoded "
                "bytes; generate one with `python -c \"from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())\"`)"
            ) from None
    return keys


def read_or_create_secret_file(path: Path, make_secret) -> str:
    """Return the secret stored in `path`, creating it (mode 0600) on first use.

    Used only in development mode, so a laptop gets stable secrets that live
    outside git without anyone having to configure them.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = make_secret()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def new_django_secret() -> str:
    return secrets.token_urlsafe(50)
