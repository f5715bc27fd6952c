"""A flood of wrong secrets over real sockets: throttled (429, close 4429) after the limit,
the victim's right key still authenticates, and the victim org's audit chain grows by a
few summarised rows — not one per attempt — and still verifies."""
import asyncio
import json
import time

import pytest
import websockets

from tests.support.frames import next_frame, send_frame

pytestmark = pytest.mark.e2e

LIMIT = 10
ATTEMPTS = 200
AT_ONCE = 10


async def auth_once(url: str, token: str, client: str) -> tuple[dict, int | None]:
    """One connection from `client` (as the trusted proxy in front of the gateway reports it)."""
    async with websockets.connect(url, additional_headers={"X-Forwarded-For": client}) as ws:
        await send_frame(ws, {"type": "auth", "token": token})
        answer = await next_frame(ws)
        if answer["type"] == "auth_ok":
            return answer, None
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
        return answer, closed.value.rcvd.code


def chain_rows(stack, chain: str) -> list[tuple[str, dict]]:
    rows = stack.query("SELECT action, data FROM tenants_auditevent WHERE chain = %s ORDER BY seq", (chain,))
    return [(action, data if isinstance(data, dict) else json.loads(data)) for action, data in rows]


async def test_a_burst_of_wrong_secrets_is_throttled_and_summarised_while_the_right_key_works(stack):
    port = await asyncio.to_thread(
        stack.start_gateway, OPENCLAW_TRUSTED_PROXIES="127.0.0.1/32", OPENCLAW_AUTH_FAILURES_PER_ADDRESS=str(LIMIT),
        OPENCLAW_AUTH_FAILURES_PER_KEY=str(LIMIT), OPENCLAW_AUTH_AUDIT_SUMMARY_SECONDS="2")
    url = stack.url(port)
    victim = (await asyncio.to_thread(stack.manage, "create_api_key", "--org", "demo", "--name", "flood victim")).strip()
    chain = stack.query("SELECT chain FROM tenants_auditevent WHERE action = 'api_key.create' "
                        "ORDER BY id DESC LIMIT 1")[0][0]
    rows_before = len(chain_rows(stack, chain))

    answers = []
    for start in range(0, ATTEMPTS, AT_ONCE):
        answers += await asyncio.gather(*(auth_once(url, victim[:-6] + f"{n:06d}", "198.51.100.77")
                                          for n in range(start, start + AT_ONCE)))
    refused = [a for a, code in answers if (a["code"], a["error"], code) == (429, "rate_limited", 4429)]
    failed = [a for a, code in answers if (a["code"], code) == (401, 4401)]
    assert len(refused) + len(failed) == ATTEMPTS
    # Attempts already in flight when the limit was reached may still finish: at most one batch more.
    assert LIMIT <= len(failed) <= LIMIT + AT_ONCE, len(failed)
    assert all(a["retryable"] and 0 < a["retry_after_ms"] <= 60_000 for a in refused)

    # From a fresh address, a wrong secret on the hammered prefix is refused; the right one is not.
    answer, code = await auth_once(url, victim[:-6] + "zzzzzz", "198.51.100.78")
    assert (answer["code"], code) == (429, 4429) and "with this key" in answer["message"]
    answer, _ = await auth_once(url, victim, "198.51.100.79")
    assert answer["type"] == "auth_ok" and answer["org"] == "demo"

    # The victim's chain: the first failure's event, then summaries that account for every attempt.
    deadline = time.monotonic() + 15
    while True:
        added = chain_rows(stack, chain)[rows_before:]
        summarised = sum(d["failures"] for action, d in added if action == "auth.failed.summary"
                         and d["reason"] == "unknown key")
        if summarised + 1 >= len(failed) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert added[0] == ("auth.failed", {"reason": "unknown key", "source": "websocket", "address": "198.51.100.77"})
    assert summarised + 1 == len(failed)
    assert len(added) <= 8, added  # a handful of rows for 201 attempts
    verified = await asyncio.to_thread(
        stack.manage, "shell", "-c", f"from tenants.audit import verify_chain; print(verify_chain('{chain}'))")
    assert verified.strip().splitlines()[-1] == "(True, None)"
