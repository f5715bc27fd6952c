"""The gateway's consumer in-process, over channels' WebsocketCommunicator: open a
socket, authenticate it, and read the usage record a request left behind."""
from channels.testing import WebsocketCommunicator

from billing.models import UsageRecord
from billing.recorder import usage_recorder
from openclaw_site.asgi import application
from tests.support.frames import collect, next_frame, send_frame


async def usage_of(client_request_id: str) -> UsageRecord:
    """The request's usage record, once the recorder has written what it holds."""
    assert await usage_recorder.flush(timeout=10)
    return await UsageRecord.objects.aget(client_request_id=client_request_id)


async def connect(headers=None) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, "/websocket", headers=headers or [])
    connected, _ = await comm.connect()
    assert connected
    return comm


async def authed(issued_key) -> WebsocketCommunicator:
    """A socket authenticated with the key's auth frame (auth_ok already read)."""
    comm = await connect()
    await send_frame(comm, {"type": "auth", "token": issued_key.raw})
    ok = await next_frame(comm)
    assert ok["type"] == "auth_ok"
    return comm


async def ask(comm, request_id, prompt="hi [[mock tokens=3]]", model="mock-fast", **extra) -> list[dict]:
    """Send one llm_request (extra fields as given) and return its frames, to the last."""
    frame = {"type": "llm_request", "request_id": request_id, "model": model, **extra}
    if prompt is not None:
        frame["prompt"] = prompt
    await send_frame(comm, frame)
    return (await collect(comm))[request_id]
