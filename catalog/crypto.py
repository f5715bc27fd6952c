"""Encryption at rest for provider credentials.

MultiFernet over OPENCLAW_CREDENTIAL_KEYS: the first key encrypts, every key
decrypts, so keys rotate by prepending a new one and re-encrypting (`reencrypt_secret`;
no command does it for every credential yet, docs/operations.md). Independent of
SECRET_KEY on purpose.
"""
from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@lru_cache(maxsize=1)
def _fernet() -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.encode()) for key in settings.CREDENTIAL_KEYS])
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "OPENCLAW_CREDENTIAL_KEYS must be Fernet keys (32 url-safe base64-encoded bytes)"
        ) from exc


def encrypt_secret(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured("a provider credential cannot be decrypted with OPENCLAW_CREDENTIAL_KEYS") from None


def reencrypt_secret(token: str) -> str:
    return _fernet().rotate(token.encode()).decode()
