"""Authenticating a socket (gateway/auth.py): by the `auth` frame or by a Bearer header
on the upgrade, a bad key answered with 401 and close 4401 — through the consumer, as a
client meets it. Throttling failed attempts: tests/gateway/test_auth_throttle.py; the
re-check of a key before each request: tests/gateway/test_freshness.py."""
import pytest

from tests.support.consumer import connect
from tests.support.frames import next_frame, send_frame

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_bearer_header_authenticates_without_an_auth_frame(issued_key):
    comm = await connect(headers=[(b"authorization", f"Bearer {issued_key.raw}".encode())])
    assert (await next_frame(comm))["type"] == "auth_ok"
    await comm.disconnect()


async def test_a_bad_key_gets_401_then_close_4401(issued_key):
    comm = await connect()
    await send_frame(comm, {"type": "auth", "token": issued_key.raw[:-4] + "zzzz"})
    error = await next_frame(comm)
    assert error["type"] == "error" and error["code"] == 401 and error["error"] == "unauthorized"
    assert issued_key.raw[:-4] not in error["message"]
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4401}


async def test_a_bad_bearer_header_is_accepted_then_closed_4401():
    comm = await connect(headers=[(b"authorization", b"Bearer ocw_nope")])
    assert (await next_frame(comm))["code"] == 401
    assert (await comm.receive_output(timeout=5))["code"] == 4401
