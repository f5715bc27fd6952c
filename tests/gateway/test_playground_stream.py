"""A playground key streams through the real ASGI application like any key."""
from __future__ import annotations

import pytest
from django.contrib.sessions.backends.db import SessionStore

from tenants.models import ApiKey

from tests.support.consumer import connect, usage_of
from tests.support.frames import collect, next_frame, send_frame

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_a_playground_key_authenticates_by_frame_and_streams(org, make_deployment):
    from asgiref.sync import sync_to_async

    from tenants.playground_keys import playground_key_for
    from tests.support.personas import make_user

    await sync_to_async(make_deployment)("mock-fast")
    user = await sync_to_async(make_user)("player")
    raw, _ = await sync_to_async(playground_key_for)(user, org, session=SessionStore())
    comm = await connect()
    await send_frame(comm, {"type": "auth", "token": raw})
    ok = await next_frame(comm)
    assert ok["type"] == "auth_ok" and ok["org"] == org.slug
    await send_frame(comm, {"type": "llm_request", "request_id": "pg-1", "model": "mock-fast",
                            "prompt": "hi [[mock tokens=4]]", "parameters": {"max_tokens": 16}})
    frames = (await collect(comm))["pg-1"]
    assert [f["type"] for f in frames] == ["llm_response_start"] + ["llm_token"] * 4 + ["llm_response_end"]
    assert frames[0]["route"]["deployment"] == "mock-fast"
    assert frames[-1]["usage"]["completion_tokens"] == 4
    record = await usage_of("pg-1")
    key = await ApiKey.objects.aget(pk=record.api_key_id)
    assert key.kind == ApiKey.Kind.PLAYGROUND and key.created_by_id == user.pk
    await comm.disconnect()


async def test_a_revoked_key_pasted_into_the_playground_is_told_why(issued_key):
    """What the page's status line shows: the error frame's code and message."""
    from asgiref.sync import sync_to_async

    from tenants.services import api_key_revoke

    await sync_to_async(api_key_revoke)(api_key=issued_key.api_key)
    comm = await connect()
    await send_frame(comm, {"type": "auth", "token": issued_key.raw})
    error = await next_frame(comm)
    assert error["type"] == "error" and error["code"] == 401 and "key revoked" in error["message"]
    assert (await comm.receive_output(timeout=5)) == {"type": "websocket.close", "code": 4401}
