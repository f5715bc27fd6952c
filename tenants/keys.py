"""API key format, generation and hashing.

A key looks like ``ocw_<lookup>_<secret>``: ``ocw_`` makes it recognisable (to
people and to secret scanners), ``<lookup>`` is a short public id used to find
the row, ``<secret>`` is 256 bits from ``secrets``. Only the SHA-256 digest of
the whole key is stored. No server secret goes into the hash, so rotating
SECRET_KEY voids nothing; the key's own entropy makes a plain hash safe.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

KEY_PREFIX = "ocw_"
_LOOKUP_ALPHABET = string.ascii_lowercase + string.digits
LOOKUP_LENGTH = 10
_KEY_RE = re.compile(r"^ocw_([a-z0-9]{10})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    raw: str  # shown once, never stored
    lookup: str
    digest: str
    last_four: str


@dataclass(frozen=True)
class ParsedKey:
    lookup: str
    digest: str


def generate_key() -> NewKey:
    lookup = "".join(secrets.choice(_LOOKUP_ALPHABET) for _ in range(LOOKUP_LENGTH))
    raw = f"{KEY_PREFIX}{lookup}_{secrets.token_urlsafe(32)}"
    return NewKey(raw=raw, lookup=lookup, digest=digest_key(raw), last_four=raw[-4:])


def digest_key(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def parse_key(raw: object) -> ParsedKey | None:
    """Return the lookup id and digest of a well-formed key, or None.

    A malformed key is rejected here, before any database query.
    """
    if not isinstance(raw, str) or len(raw) > 100:
        return None
    match = _KEY_RE.match(raw)
    if match is None:
        return None
    return ParsedKey(lookup=match.group(1), digest=digest_key(raw))


def digests_match(stored: str, presented: str) -> bool:
    return hmac.compare_digest(stored.encode(), presented.encode())


def display_prefix(lookup: str) -> str:
    """The part of a key that may be shown and logged: ``ocw_<lookup>``."""
    return f"{KEY_PREFIX}{lookup}"
