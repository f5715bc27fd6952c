"""The access-revoked hooks (tenants/hooks.py): how tenants tell the layers above that
a key was revoked or an org suspended, without importing them."""
import logging

import pytest

from tenants import hooks


@pytest.fixture
def registry(monkeypatch):
    """An empty registry for the test (the gateway's own hook is registered at start-up)."""
    monkeypatch.setattr(hooks, "_access_revoked_hooks", {})


def test_every_registered_hook_hears_the_change(registry):
    heard = []
    hooks.on_access_revoked("a", lambda *args: heard.append(("a", *args)))
    hooks.on_access_revoked("b", lambda *args: heard.append(("b", *args)))
    hooks.access_revoked(kind="api_key", public_id="k1", reason="revoked")
    assert heard == [("a", "api_key", "k1", "revoked"), ("b", "api_key", "k1", "revoked")]


def test_a_failing_hook_neither_stops_the_others_nor_raises(registry, caplog):
    heard = []

    def broken(*args):
        raise ConnectionError("channel layer down")

    hooks.on_access_revoked("broken", broken)
    hooks.on_access_revoked("after", lambda *args: heard.append(args))
    with caplog.at_level(logging.ERROR, logger="tenants.hooks"):
        hooks.access_revoked(kind="organization", public_id="acme", reason="suspended")
    assert heard == [("organization", "acme", "suspended")]
    assert any("broken" in r.getMessage() and "acme" in r.getMessage() for r in caplog.records)


def test_registering_a_name_again_replaces_its_hook(registry):
    heard = []
    hooks.on_access_revoked("gateway", lambda *args: heard.append("old"))
    hooks.on_access_revoked("gateway", lambda *args: heard.append("new"))
    hooks.access_revoked(kind="api_key", public_id="k1", reason="revoked")
    assert heard == ["new"]


def test_the_gateway_registers_its_hook_when_it_loads():
    assert "gateway.close_revoked_sockets" in hooks._access_revoked_hooks  # gateway/apps.py
