"""The running gateway over HTTP: bad hosts, the Content-Security-Policy, private data files."""
from __future__ import annotations

import asyncio
import http.client
import stat

import pytest

from tests.support.frames import authed_socket, collect, send_frame

pytestmark = pytest.mark.e2e


def get(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def debug_gateway_port(stack):
    """A gateway a developer started with DEBUG on, the setting under which Django shows its technical pages."""
    return stack.start_gateway(DJANGO_DEBUG="1")


@pytest.mark.parametrize("which", ["default", "debug-on"])
def test_a_bad_host_gets_a_plain_400_from_the_running_gateway(stack, debug_gateway_port, which):
    port = stack.port if which == "default" else debug_gateway_port
    status, headers, body = get(port, "/admin/", host="attacker.example")
    assert status == 400 and headers["content-type"].startswith("text/plain")
    assert "DisallowedHost" not in body and "SECRET" not in body and "Traceback" not in body and len(body) < 200
    # Pages that exist still work, and carry the policy.
    status, headers, _ = get(port, "/admin/login/")
    assert status == 200 and "default-src 'self'" in headers["content-security-policy"]
    assert get(port, "/healthz")[0] == 200


def test_the_data_directory_is_private_after_the_gateway_ran(stack):
    async def one_request():
        ws = await authed_socket(stack.url(), stack.api_key)
        try:
            await send_frame(ws, {"type": "llm_request", "request_id": "modes-1", "model": "gpt-4-turbo",
                                  "messages": [{"role": "user", "content": "hello"}], "max_tokens": 5})
            await collect(ws, until=1)
        finally:
            await ws.close()

    asyncio.run(one_request())  # the gateway has written to its database (and its WAL, on SQLite)
    stack.wait_for_rows("SELECT 1 FROM billing_usagerecord WHERE client_request_id = %s", ("modes-1",))
    files = {path.name: stat.S_IMODE(path.stat().st_mode) for path in stack.data_dir.iterdir() if path.is_file()}
    private = {name: mode for name, mode in files.items()
               if ".sqlite3" in name or name in ("secret_key", "credential_key")}
    if stack.sqlite_path is not None:
        assert {"openclaw.sqlite3", "openclaw.sqlite3-wal", "openclaw.sqlite3-shm"} <= set(private), files
    assert {"secret_key", "credential_key"} <= set(private) and set(private.values()) == {0o600}, private
    assert stat.S_IMODE(stack.data_dir.stat().st_mode) == 0o700
