"""Requests for a host the gateway does not serve (openclaw_site/hosts.py): a plain 400,
never Django's technical page, whatever DEBUG says."""
import pytest
from django.test import override_settings


@pytest.mark.parametrize("debug", [True, False], ids=["debug-on", "debug-off"])
def test_a_bad_host_gets_a_plain_400_never_the_technical_page(client, debug):
    with override_settings(DEBUG=debug):
        response = client.get("/admin/login/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "DisallowedHost" not in body and "settings" not in body.lower() and "Traceback" not in body
    assert len(body) < 200
