"""`manage.py serve --processes 2`: two real server processes on one port under a supervisor
(openclaw_site/supervisor.py), over real sockets. Which process serves a connection is read
from the kernel: the server-side socket of the connection, and the process that holds it.
The supervisor's own logic on stand-in processes: tests/openclaw_site/test_supervisor.py."""
import asyncio
import os
import re
import signal
import time

import pytest
import websockets

from tests.support.frames import authed_socket, next_frame, send_frame
from tests.support.services import require

pytestmark = pytest.mark.e2e


@pytest.fixture
def serve_stack(request):
    """The session's stack (tests/e2e/conftest.py); each test starts its own `serve --processes 2`."""
    require("redis")  # several processes need the shared channel layer
    return request.getfixturevalue("stack")


def server_pids(log: str) -> dict[int, int]:
    """Process number -> pid of its latest start, from the supervisor's log lines."""
    return {int(n): int(pid) for n, pid in re.findall(r"gateway process (\d+) started \(pid (\d+)\)", log)}


def serving_pid(ws, port: int, pids) -> int | None:
    """The process among `pids` holding the server side of the connection `ws` (Linux /proc)."""
    client_port = ws.local_address[1]
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote = int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)
                if (local, remote) == (port, client_port):
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return pid
            except OSError:
                continue
    return None


def restarted_pid(stack, port: int, number: int, old_pid: int) -> int:
    """The pid of process `number` once it was started again (after `old_pid`) and is ready."""
    deadline = time.monotonic() + 10
    while (pid := server_pids(stack.log(port))[number]) == old_pid:
        assert time.monotonic() < deadline, f"process {number} was not started again:\n{stack.log(port)[-3000:]}"
        time.sleep(0.05)
    stack.wait_for_log(port, f"gateway process {number} (pid {pid}) ready")
    return pid


async def sockets_on(stack, port: int, pids, *, most: int = 40) -> dict[int, object]:
    """Open authenticated sockets until one is served by each of `pids` (closing the others)."""
    found: dict[int, object] = {}
    for _ in range(most):
        ws = await authed_socket(stack.url(port), stack.api_key)
        pid = serving_pid(ws, port, pids)
        assert pid is not None, "the connection is served by none of the gateway processes"
        if pid in found:
            await ws.close()
        else:
            found[pid] = ws
        if len(found) == len(pids):
            break
    return found


async def test_connections_land_on_both_processes_and_a_killed_one_is_restarted(serve_stack):
    port = serve_stack.start_gateway(processes=2)
    pids = server_pids(serve_stack.log(port))
    assert len(pids) == 2, serve_stack.log(port)
    on = await sockets_on(serve_stack, port, pids.values())
    assert set(on) == set(pids.values()), f"every connection went to one process: {on}"
    for ws in on.values():  # each process answers on its own socket
        await send_frame(ws, {"type": "ping"})
        assert (await next_frame(ws))["type"] == "pong"
    killed = pids[1]
    os.kill(killed, signal.SIGKILL)
    serve_stack.wait_for_log(port, f"gateway process 1 (pid {killed}) exited unexpectedly (killed by SIGKILL); "
                                   "restarting it in 0.5 s")
    with pytest.raises(websockets.ConnectionClosed):
        await next_frame(on[killed])
    new_pid = await asyncio.to_thread(restarted_pid, serve_stack, port, 1, killed)
    # The survivor kept its socket; the new process serves new connections.
    await send_frame(on[pids[2]], {"type": "ping"})
    assert (await next_frame(on[pids[2]]))["type"] == "pong"
    again = await sockets_on(serve_stack, port, [new_pid, pids[2]])
    assert new_pid in again
    for ws in [*on.values(), *again.values()]:
        await ws.close()
    supervisor = dict(serve_stack.processes)[f"gateway:{port}"]
    supervisor.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.wait, 30) == 0


async def test_sigterm_drains_a_stream_on_each_process_and_all_exit_0(serve_stack):
    port = serve_stack.start_gateway(processes=2, OPENCLAW_SHUTDOWN_DRAIN_SECONDS="10")
    supervisor = dict(serve_stack.processes)[f"gateway:{port}"]
    pids = server_pids(serve_stack.log(port))
    on = await sockets_on(serve_stack, port, pids.values())
    assert set(on) == set(pids.values())
    for pid, ws in on.items():  # a stream of about a second on each process
        await send_frame(ws, {"type": "llm_request", "request_id": f"serve-drain-{pid}", "model": "gpt-4-turbo",
                              "prompt": "drain [[mock tokens=40 rate=40 ttft_ms=0]]"})
    for ws in on.values():
        while (await next_frame(ws))["type"] != "llm_token":
            pass
    supervisor.send_signal(signal.SIGTERM)
    for pid, ws in on.items():
        frames = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                frames.append(await next_frame(ws, timeout=15))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001, frames[-3:]
        end = [f for f in frames if f.get("request_id") == f"serve-drain-{pid}"][-1]
        assert (end["type"], end.get("finish_reason")) == ("llm_response_end", "stop"), frames[-3:]
    assert await asyncio.to_thread(supervisor.wait, 30) == 0, serve_stack.log(port)[-3000:]
    log = serve_stack.log(port)
    for number, pid in pids.items():
        assert f"gateway process {number} (pid {pid}) exited (exit code 0)" in log
    rows = serve_stack.wait_for_rows("SELECT status FROM billing_usagerecord WHERE client_request_id LIKE 'serve-drain-%%'",
                                     count=2)
    assert [r[0] for r in rows] == ["completed", "completed"]
