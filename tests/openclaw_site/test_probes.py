"""The readiness probe (openclaw_site/probes.py): /readyz names a failing dependency,
never its error text."""
import asyncio
import logging

import pytest
from django.db import OperationalError

SECRET = "hunter2@db.internal"  # what a driver's error text can carry: never shown


@pytest.mark.django_db
def test_readyz_is_200_when_every_dependency_answers(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready",
                               "checks": {"database": "ok", "channel_layer": "ok", "broker": "ok"}}


@pytest.mark.django_db
def test_readyz_names_a_failing_dependency_without_its_error(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready" and body["checks"]["broker"] == "unavailable"
    assert body["checks"]["database"] == "ok"


class _UnreachableDatabase:
    def cursor(self):
        raise OperationalError(f'connection to server at "{SECRET}" failed: password authentication failed')

    def close(self):
        pass


@pytest.mark.django_db
def test_readyz_names_a_failing_database_without_its_error(client, monkeypatch, caplog):
    import openclaw_site.probes

    monkeypatch.setattr(openclaw_site.probes, "connection", _UnreachableDatabase())
    with caplog.at_level(logging.DEBUG):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready",
                               "checks": {"database": "unavailable", "channel_layer": "ok", "broker": "ok"}}
    assert SECRET not in response.content.decode() and SECRET not in caplog.text
    assert "database" in caplog.text  # the log says which check failed


class _BrokenChannelLayer:
    """A channel layer whose backend refuses every call (Redis down, bad password)."""

    async def new_channel(self, prefix="specific."):
        raise ConnectionError(f"Error connecting to redis://:{SECRET}:6379: Connection refused")

    async def send(self, channel, message):
        raise ConnectionError(SECRET)

    async def receive(self, channel):
        raise ConnectionError(SECRET)


class _SilentChannelLayer:
    """A channel layer whose messages never come back (a partitioned Redis)."""

    async def new_channel(self, prefix="specific."):
        return "specific.probe!1"

    async def send(self, channel, message):
        return None

    async def receive(self, channel):
        await asyncio.sleep(3600)


@pytest.mark.parametrize("layer", [_BrokenChannelLayer, _SilentChannelLayer], ids=["refuses", "never-answers"])
@pytest.mark.django_db
def test_readyz_names_a_failing_channel_layer_without_its_error(client, monkeypatch, caplog, layer):
    import openclaw_site.probes

    monkeypatch.setattr(openclaw_site.probes, "get_channel_layer", lambda *args, **kwargs: layer())
    monkeypatch.setattr(openclaw_site.probes, "CHECK_TIMEOUT_SECONDS", 1)  # the silent layer is given up on
    with caplog.at_level(logging.DEBUG):
        response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready" and body["checks"]["channel_layer"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert SECRET not in response.content.decode() and SECRET not in caplog.text


@pytest.mark.django_db
def test_the_database_check_leaves_no_connection_open_on_its_thread(client, monkeypatch):
    """Each check opens its own connection and closes it: nothing is left on the
    executor's threads to go stale (a restart would fail every later check there) or
    to stay open at shutdown."""
    import openclaw_site.probes
    from django.db import connection

    check = openclaw_site.probes._check_database
    left_open = []

    def checked():
        try:
            check()
        finally:
            left_open.append(connection.connection is not None)

    monkeypatch.setattr(openclaw_site.probes, "_check_database", checked)
    assert client.get("/readyz").json()["checks"]["database"] == "ok"
    assert left_open == [False]
