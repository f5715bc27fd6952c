"""The supervisor of `manage.py serve --processes N` (openclaw_site/supervisor.py), as a real
process looking after small stand-in servers that tell it they are ready as the gateway's
server does (one byte on OPENCLAW_SERVE_READY_FD). With the real servers:
tests/e2e/test_serve_processes.py."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from openclaw_site.supervisor import MAX_RESTART_DELAY, restart_delay
from tests.support.mockllm import REPO_ROOT

# argv[1]: a directory for marks. A process whose FAKE_FAIL_ONCE is set and that is the first
# to claim the mark exits 3 before it is ready; the others serve until SIGTERM, then write a
# mark and exit with FAKE_EXIT_ON_TERM (0).
FAKE_SERVER = r"""
import os, signal, sys, time
marks = sys.argv[1]
if os.environ.get("FAKE_FAIL_ONCE"):
    try:
        os.close(os.open(os.path.join(marks, "failed"), os.O_CREAT | os.O_EXCL))
        sys.exit(3)
    except FileExistsError:
        pass
def stop(*_):
    open(os.path.join(marks, f"terminated-{os.getpid()}"), "w").close()
    sys.exit(int(os.environ.get("FAKE_EXIT_ON_TERM", "0")))
signal.signal(signal.SIGTERM, stop)
fd = int(os.environ["OPENCLAW_SERVE_READY_FD"])
os.write(fd, b"1")
os.close(fd)
while True:
    time.sleep(1)
"""


class Supervised:
    def __init__(self, tmp_path: Path, processes: int = 2, **env: str):
        self.marks = tmp_path / "marks"
        self.marks.mkdir()
        self.log_path = tmp_path / "supervisor.log"
        command = [sys.executable, "-m", "openclaw_site.supervisor", "--processes", str(processes), "--",
                   sys.executable, "-c", FAKE_SERVER, str(self.marks)]
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env={**os.environ, **env},
                                        stdout=subprocess.DEVNULL, stderr=open(self.log_path, "w"))

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match:
        deadline = time.monotonic() + timeout
        while not (match := re.search(pattern, self.log())):
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.log()}"
            time.sleep(0.02)
        return match

    def pids(self) -> dict[int, int]:
        return {int(n): int(p) for n, p in re.findall(r"gateway process (\d+) started \(pid (\d+)\)", self.log())}

    def restarted(self, number: int, old_pid: int, timeout: float = 10) -> int:
        """The pid of process `number` once it was started again after `old_pid` and is ready."""
        deadline = time.monotonic() + timeout
        while (pid := self.pids()[number]) == old_pid:
            assert time.monotonic() < deadline, f"process {number} was not started again:\n{self.log()}"
            time.sleep(0.02)
        self.wait_for(rf"gateway process {number} \(pid {pid}\) ready")
        return pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def supervised(tmp_path):
    started = []

    def start(**kwargs) -> Supervised:
        started.append(Supervised(tmp_path, **kwargs))
        return started[-1]
    yield start
    for supervisor in started:
        supervisor.stop()


def test_restart_delays_double_up_to_the_cap():
    assert [restart_delay(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, MAX_RESTART_DELAY, MAX_RESTART_DELAY]


def test_a_process_that_cannot_start_stops_the_others_and_the_supervisor_exits_1(supervised):
    supervisor = supervised(FAKE_FAIL_ONCE="1")
    assert supervisor.process.wait(30) == 1
    log = supervisor.log()
    assert re.search(r"gateway process \d \(pid \d+\) exited before it was ready \(exit code 3\)", log), log
    assert "serve: the gateway processes could not start" in log
    assert len(supervisor.pids()) == 2 and "restarting" not in log


def test_killed_processes_are_restarted_with_growing_delays_and_sigterm_stops_every_one(supervised):
    supervisor = supervised()
    supervisor.wait_for("all 2 gateway processes ready")
    first = supervisor.pids()[1]
    os.kill(first, signal.SIGKILL)
    supervisor.wait_for(rf"gateway process 1 \(pid {first}\) exited unexpectedly \(killed by SIGKILL\); "
                        r"restarting it in 0.5 s")
    second = supervisor.restarted(1, first)
    os.kill(second, signal.SIGKILL)  # again, at once: the delay doubles
    supervisor.wait_for(rf"gateway process 1 \(pid {second}\) exited unexpectedly \(killed by SIGKILL\); "
                        r"restarting it in 1 s")
    third = supervisor.restarted(1, second)
    survivor = supervisor.pids()[2]
    supervisor.process.send_signal(signal.SIGTERM)
    assert supervisor.process.wait(20) == 0, supervisor.log()
    log = supervisor.log()
    for pid in (third, survivor):
        assert f"(pid {pid}) exited (exit code 0)" in log and (supervisor.marks / f"terminated-{pid}").exists()


def test_a_process_that_exits_non_zero_on_its_way_out_makes_the_supervisor_exit_1(supervised):
    supervisor = supervised(FAKE_EXIT_ON_TERM="1")
    supervisor.wait_for("all 2 gateway processes ready")
    supervisor.process.send_signal(signal.SIGINT)  # Ctrl-C: sent on as SIGTERM
    assert supervisor.process.wait(20) == 1
    assert re.search(r"stopped; gateway process 1: exit code 1; gateway process 2: exit code 1", supervisor.log())


def test_the_processes_get_sigterm_when_the_supervisor_dies(supervised):
    supervisor = supervised()
    supervisor.wait_for("all 2 gateway processes ready")
    pids = supervisor.pids().values()
    supervisor.process.kill()
    supervisor.process.wait(10)
    deadline = time.monotonic() + 10
    while not all((supervisor.marks / f"terminated-{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, "a server outlived its supervisor without being told to stop"
        time.sleep(0.05)
