"""Helpers to read protocol frames in tests, from a WebsocketCommunicator or a real socket."""
from __future__ import annotations

import asyncio
import json

TERMINAL = ("llm_response_end", "error")


async def next_frame(conn, timeout: float = 10) -> dict:
    """The next frame from a channels WebsocketCommunicator or a `websockets` client."""
    if hasattr(conn, "receive_from"):
        return json.loads(await conn.receive_from(timeout=timeout))
    return json.loads(await asyncio.wait_for(conn.recv(), timeout))


async def send_frame(conn, frame: dict) -> None:
    text = json.dumps(frame)
    if hasattr(conn, "send_to"):
        await conn.send_to(text_data=text)
    else:
        await conn.send(text)


async def collect(conn, *, until: int = 1, timeout: float = 15) -> dict[str, list[dict]]:
    """Read frames until `until` requests reached a terminal frame; group them by request_id."""
    by_request: dict[str, list[dict]] = {}
    finished = 0
    while finished < until:
        frame = await next_frame(conn, timeout)
        by_request.setdefault(frame.get("request_id", ""), []).append(frame)
        if frame["type"] in TERMINAL and frame.get("request_id"):
            finished += 1
    return by_request


def text_of(frames: list[dict]) -> str:
    return "".join(f["content"] for f in frames if f["type"] == "llm_token")


async def authed_socket(url: str, key: str, **connect_options):
    """A real WebSocket to the gateway, authenticated with an `auth` frame."""
    import websockets

    ws = await websockets.connect(url, **connect_options)
    await send_frame(ws, {"type": "auth", "token": key})
    assert (await next_frame(ws))["type"] == "auth_ok"
    return ws
