"""A request served by the ASGI handler closes its thread's database connections when it
finishes; other senders (Django's test clients) leave them alone. That no session is left
behind by a real server's pages is tested end to end in
tests/e2e/test_dashboard_exports_e2e.py."""
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import connection
from django.test.client import ClientHandler

from openclaw_site import http_connections

pytestmark = pytest.mark.django_db(transaction=True)


def open_connection():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert connection.connection is not None


def test_a_finished_asgi_request_closes_its_connection():
    http_connections.install()
    open_connection()
    request_finished.send(sender=ASGIHandler)
    assert connection.connection is None


def test_other_senders_keep_the_connection():
    open_connection()
    http_connections.close_request_connections(sender=ClientHandler)
    http_connections.close_request_connections(sender=None)
    assert connection.connection is not None
