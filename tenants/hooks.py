"""Hooks that let the layers above tenants hear about tenant changes without
tenants importing them (docs/architecture.md, "Layers").

When a transaction that revoked a key or suspended an org has committed, the
service calls `access_revoked`, which calls every registered hook. The gateway
registers one when its app loads (gateway/apps.py) that closes the matching
sockets in every gateway process. A change nobody hears (a raw UPDATE, a process
with no gateway app loaded) is caught by each gateway process's background
re-check of the keys it serves, within about half a second.
"""
from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger(__name__)

# hook(kind, public_id, reason): kind is "api_key" or "organization".
AccessRevokedHook = Callable[[str, str, str], None]

_access_revoked_hooks: dict[str, AccessRevokedHook] = {}


def on_access_revoked(name: str, hook: AccessRevokedHook) -> None:
    """Register `hook` under `name` (registering a name again replaces its hook)."""
    _access_revoked_hooks[name] = hook


def access_revoked(*, kind: str, public_id: str, reason: str) -> None:
    """Tell every registered hook; one failing hook never stops the others, nor the
    service that called (the background re-check is the safety net)."""
    for name, hook in list(_access_revoked_hooks.items()):
        try:
            hook(kind, public_id, reason)
        except Exception:
            log.exception("access-revoked hook %s failed for %s %s", name, kind, public_id)


# --- Names an org can request ----------------------------------------------------------
# The key form offers the model and route names an org can resolve; the catalogue that
# knows them sits above tenants, so it registers a source here (catalog/apps.py).
NameSource = Callable[[object], list[str]]

_name_sources: dict[str, NameSource] = {}


def on_resolvable_names(name: str, source: NameSource) -> None:
    """Register `source(org) -> names` under `name` (registering a name again replaces it)."""
    _name_sources[name] = source


def resolvable_names(org) -> list[str]:
    """Every name (model or route) `org` can request, sorted, from all registered sources."""
    names: set[str] = set()
    for source in list(_name_sources.values()):
        names.update(source(org))
    return sorted(names)
