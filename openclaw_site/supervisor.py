"""`python -m openclaw_site.supervisor --processes N -- COMMAND...`: N gateway server
processes on one port, and the parent that looks after them.

`manage.py serve --processes N` (N > 1) runs this, with COMMAND the gateway's own server
command line plus `--reuse-port` (openclaw_site/processes.py): each server binds its own
socket to the port with SO_REUSEPORT and the kernel spreads new connections over them.
Nothing of Django is loaded here; each server loads the application itself.

- Start: the N servers start at once. Each writes a byte on its own pipe (the file
  descriptor in OPENCLAW_SERVE_READY_FD) once it listens and its runtime has started
  (openclaw_site/server.py). If one exits before that, or is not ready within
  `--start-timeout` seconds, the others are stopped and this exits 1, naming it.
- SIGTERM or SIGINT: sent on to every server as SIGTERM; each drains as a single server
  does (gateway/lifecycle.py). Exits 0 once all have exited 0 (or, still loading, were
  ended by that SIGTERM), 1 otherwise. Another signal while they drain changes nothing.
- A server that exits while serving (a crash, the OOM killer, or a SIGTERM sent to it alone,
  which drains it first) is started again, after a delay that starts at 0.5 s and doubles
  with each exit in a row (at most 30 s); a server that had served for 30 s starts the
  sequence afresh. Each exit and restart is logged.
- The servers are in their own process group, so a terminal's Ctrl-C reaches only this
  process (which sends SIGTERM once), and on Linux each gets SIGTERM when this process dies
  (PR_SET_PDEATHSIG): it drains rather than outliving its parent.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

READY_FD_ENV = "OPENCLAW_SERVE_READY_FD"  # openclaw_site/server.py writes to it
START_TIMEOUT_SECONDS = 120.0
STABLE_SECONDS = 30.0
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
_TICK = 0.1
_PR_SET_PDEATHSIG = 1

log = logging.getLogger("openclaw_site.supervisor")


def process_count(value: str) -> int:
    """argparse type for a number of server processes: a whole number, 1 or more."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"a whole number of processes (1 or more) is needed, not {value!r}")
    if number < 1:
        raise argparse.ArgumentTypeError(f"at least 1 process is needed, not {number}")
    return number


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def restart_delay(quick_exits: int) -> float:
    """The delay before the restart that follows `quick_exits` exits in a row (0: the first)."""
    return min(FIRST_RESTART_DELAY * 2 ** quick_exits, MAX_RESTART_DELAY)


def _pdeathsig_setter():
    """A preexec_fn that asks the kernel for SIGTERM when the parent dies (Linux), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the request was made
            os.kill(os.getpid(), signal.SIGTERM)
    return set_pdeathsig


@dataclass
class Worker:
    number: int
    process: subprocess.Popen | None = None
    ready_fd: int | None = None
    started_at: float = 0.0
    ready_at: float | None = None
    quick_exits: int = 0
    restart_at: float | None = None
    last_returncode: int | None = None
    pid: int = 0  # of the latest process


class Supervisor:
    def __init__(self, command: list[str], processes: int, *, start_timeout: float = START_TIMEOUT_SECONDS):
        self.command = command
        self.workers = [Worker(number=i + 1) for i in range(processes)]
        self.start_timeout = start_timeout
        self.stop_signal: int | None = None
        self.stopping = False
        self.failure: str | None = None
        self.starting = True  # until every server has been ready once
        self._preexec = _pdeathsig_setter()

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        log.info("starting %d gateway processes", len(self.workers))
        for worker in self.workers:
            if not self._spawn(worker):
                break
        while True:
            if self.stop_signal is not None and not self.stopping:
                log.info("%s received: stopping %d gateway processes (each drains its connections)",
                         signal.Signals(self.stop_signal).name, self._alive())
                self._stop_all()
            self._read_ready_pipes(_TICK)
            now = time.monotonic()
            for worker in self.workers:
                self._look_after(worker, now)
            if self.starting and all(w.ready_at is not None for w in self.workers):
                self.starting = False
                log.info("all %d gateway processes ready (pids %s)", len(self.workers),
                         ", ".join(str(w.pid) for w in self.workers))
            if self.stopping and not self._alive():
                return self._exit_code()

    def _look_after(self, worker: Worker, now: float) -> None:
        if worker.process is None:
            if worker.restart_at is not None and now >= worker.restart_at and not self.stopping:
                worker.restart_at = None
                self._spawn(worker)
            return
        returncode = worker.process.poll()
        if returncode is None:
            if worker.ready_at is None and now - worker.started_at > self.start_timeout and not self.stopping:
                message = (f"gateway process {worker.number} (pid {worker.pid}) was not ready within "
                           f"{self.start_timeout:g} s")
                if self.starting:
                    self._fail(message)
                else:
                    log.error("%s; killing it", message)
                    worker.process.kill()  # reaped on a later round, then restarted
            return
        was_ready = worker.ready_at is not None
        served = now - worker.ready_at if was_ready else 0.0
        self._forget(worker, returncode)
        if self.stopping:
            log.info("gateway process %d (pid %d) exited (%s)", worker.number, worker.pid,
                     describe_exit(returncode))
            return
        if self.starting:
            what = "exited" if was_ready else "exited before it was ready"
            self._fail(f"gateway process {worker.number} (pid {worker.pid}) {what} "
                       f"({describe_exit(returncode)}); see its output above")
            return
        if served >= STABLE_SECONDS:
            worker.quick_exits = 0
        delay = restart_delay(worker.quick_exits)
        worker.quick_exits += 1
        worker.restart_at = now + delay
        log.warning("gateway process %d (pid %d) exited unexpectedly (%s); restarting it in %g s",
                    worker.number, worker.pid, describe_exit(returncode), delay)

    # --- starting and stopping ------------------------------------------------------------

    def _spawn(self, worker: Worker) -> bool:
        read_fd, write_fd = os.pipe()
        env = {**os.environ, READY_FD_ENV: str(write_fd)}
        try:
            worker.process = subprocess.Popen(self.command, env=env, pass_fds=(write_fd,),
                                              stdin=subprocess.DEVNULL, process_group=0,
                                              preexec_fn=self._preexec)
        except OSError as exc:
            os.close(read_fd)
            message = f"gateway process {worker.number} could not be started: {exc}"
            if self.starting:
                self._fail(message)
            else:
                log.error(message)
                worker.restart_at = time.monotonic() + restart_delay(worker.quick_exits)
                worker.quick_exits += 1
            return False
        finally:
            os.close(write_fd)
        worker.ready_fd = read_fd
        worker.started_at = time.monotonic()
        worker.ready_at = None
        worker.pid = worker.process.pid
        log.info("gateway process %d started (pid %d)", worker.number, worker.process.pid)
        return True

    def _read_ready_pipes(self, timeout: float) -> None:
        fds = {w.ready_fd: w for w in self.workers if w.ready_fd is not None}
        if not fds:
            time.sleep(timeout)
            return
        readable, _, _ = select.select(list(fds), [], [], timeout)
        for fd in readable:
            worker = fds[fd]
            try:
                data = os.read(fd, 16)
            except OSError:
                data = b""
            os.close(fd)
            worker.ready_fd = None
            if data:  # nothing (end of file): the process closed the pipe exiting, seen on reaping
                worker.ready_at = time.monotonic()
                log.info("gateway process %d (pid %d) ready", worker.number, worker.pid)

    def _forget(self, worker: Worker, returncode: int) -> None:
        if worker.ready_fd is not None:
            os.close(worker.ready_fd)
            worker.ready_fd = None
        worker.last_returncode = returncode
        worker.process = None

    def _stop_all(self) -> None:
        self.stopping = True
        for worker in self.workers:
            worker.restart_at = None
            if worker.process is not None and worker.process.poll() is None:
                try:
                    worker.process.send_signal(signal.SIGTERM)
                except OSError:
                    pass

    def _fail(self, message: str) -> None:
        log.error("%s; stopping the others", message)
        self.failure = message
        self._stop_all()

    def _alive(self) -> int:
        return sum(1 for w in self.workers if w.process is not None)

    def _exit_code(self) -> int:
        if self.failure is not None:
            sys.stderr.write(f"serve: the gateway processes could not start: {self.failure}\n")
            return 1
        # Killed by the SIGTERM sent on: a process still loading, before the server's handler.
        unclean = [w for w in self.workers if w.last_returncode not in (0, None, -signal.SIGTERM)]
        if unclean:
            log.error("stopped; %s", "; ".join(f"gateway process {w.number}: {describe_exit(w.last_returncode)}"
                                             for w in unclean))
            return 1
        log.info("stopped")
        return 0

    def _on_signal(self, signum: int, _frame) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
        elif self.stopping:
            log.info("%s received: already stopping; waiting for %d gateway processes to drain",
                     signal.Signals(signum).name, self._alive())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m openclaw_site.supervisor",
                                     description="Run N gateway server processes and look after them.")
    parser.add_argument("--processes", type=process_count, required=True)
    parser.add_argument("--start-timeout", type=float, default=START_TIMEOUT_SECONDS,
                        help="seconds each process has to become ready")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the server's command line")
    options = parser.parse_args(argv)
    command = options.command[1:] if options.command[:1] == ["--"] else options.command
    if not command:
        parser.error("the server's command line is missing (after --)")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return Supervisor(command, options.processes, start_timeout=options.start_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
