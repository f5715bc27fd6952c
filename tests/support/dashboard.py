"""A gateway stack for the dashboard's browser tests: people who can sign in, and traffic.

`prepare_dashboard(stack)` takes a prepared `Stack` (the demo org, its models and key) and
adds, through the management commands an operator would use, an owner and an auditor
with known passwords and a second API key, then sends real requests over the gateway's
WebSocket so the request log has rows of more than one key, model and status.
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from tests.support.frames import TERMINAL, authed_socket, next_frame, send_frame
from tests.support.stack import Stack

ORG = "demo"  # the demo org that Stack.prepare() (setup_demo) creates
OWNER = ("olivia", "owner-password-1234")
AUDITOR = ("arthur", "auditor-password-1234")
SECOND_KEY_NAME = "nightly-batch"


@dataclass
class DashboardStack:
    stack: Stack
    base_url: str
    org: str = ORG
    owner: tuple[str, str] = OWNER
    auditor: tuple[str, str] = AUDITOR
    keys: dict[str, str] = field(default_factory=dict)  # key name -> full secret
    request_ids: list[str] = field(default_factory=list)  # usage records' UUIDs

    def url(self, path: str = "") -> str:
        """An absolute URL of a page of the org, e.g. url("keys/")."""
        return f"{self.base_url}/orgs/{self.org}/{path}"


async def _one_request(url: str, key: str, model: str, *, max_tokens: int, cancel: bool = False) -> None:
    socket = await authed_socket(url, key)
    try:
        await send_frame(socket, {"type": "llm_request", "model": model, "prompt": "Say something short.",
                                  "parameters": {"max_tokens": max_tokens}})
        while True:
            frame = await next_frame(socket, timeout=20)
            if cancel and frame["type"] == "llm_token":
                await send_frame(socket, {"type": "cancel", "request_id": frame["request_id"]})
                cancel = False
            if frame["type"] in TERMINAL:
                return
    finally:
        await socket.close()


async def _traffic(url: str, demo_key: str, batch_key: str) -> int:
    """Completed requests on both demo models and both keys, one cut at max_tokens, one
    cancelled and one refused (a model the key may not use)."""
    plan = [
        (demo_key, "gpt-4-turbo", 6, False), (demo_key, "gpt-4-turbo", 6, False),
        (demo_key, "claude-3-opus", 4, False), (demo_key, "gpt-4-turbo", 2, False),
        (batch_key, "gpt-4-turbo", 6, False), (batch_key, "gpt-4-turbo", 40, True),
        (batch_key, "claude-3-opus", 4, False),
    ]
    await asyncio.gather(*(_one_request(url, key, model, max_tokens=n, cancel=cancel)
                           for key, model, n, cancel in plan))
    return len(plan)


def prepare_dashboard(stack: Stack) -> DashboardStack:
    """Users, a second key and traffic on a prepared stack whose gateway is running."""
    for (username, password), role in ((OWNER, "owner"), (AUDITOR, "auditor")):
        stack.manage("create_user", username, "--org", ORG, "--role", role, "--password", password,
                     "--email", f"{username}@example.com")
    # The batch key may use gpt-4-turbo only: its claude-3-opus request is refused (a 403 record).
    batch_key = stack.manage("create_api_key", "--org", ORG, "--name", SECOND_KEY_NAME,
                             "--allow", "gpt-4-turbo").strip().splitlines()[-1]
    sent = asyncio.run(_traffic(stack.url(), stack.api_key, batch_key))
    rows = stack.wait_for_rows("SELECT request_id FROM billing_usagerecord", count=sent, timeout=15)
    assert len(rows) == sent, f"{len(rows)} usage records for {sent} requests"
    request_ids = [str(uuid.UUID(str(row[0]))) for row in rows]
    return DashboardStack(stack=stack, base_url=f"http://127.0.0.1:{stack.port}",
                          keys={"demo": stack.api_key, SECOND_KEY_NAME: batch_key}, request_ids=request_ids)

