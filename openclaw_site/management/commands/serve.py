"""Run the gateway in production: daphne with the gateway's flags, in one process or several.

The server's frame limits, heartbeat and connection-age settings must follow the
gateway's own settings (see `openclaw_site.processes.gateway_command`); this command
derives them, so operators never copy flags by hand. It replaces itself with what it runs
(exec), so signals from a process manager reach it directly: the server itself for one
process, or for `--processes N` a supervisor (openclaw_site/supervisor.py) running N
servers on the same port.

Several processes need Redis: without it, connection counts, routing health, presence,
revocations and failed-login counters live in each process's memory (the in-memory channel
layer), so N processes would each apply the per-key limits in full and miss each other's
broadcasts. `--processes` defaults to the number of usable cores with Redis, 1 without.
"""
from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from openclaw_site.processes import port_in_use, serve_command
from openclaw_site.supervisor import process_count


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Command(BaseCommand):
    help = "Serve the gateway (WebSocket, admin, health endpoints) on HOST:PORT with the flags its settings need."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("OPENCLAW_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("OPENCLAW_PORT", "8000")))
        parser.add_argument("--processes", type=process_count, default=os.environ.get("OPENCLAW_PROCESSES") or None,
                            help="server processes sharing the port (default: the number of usable cores "
                                 "when REDIS_URL is set, 1 without it; more than 1 needs REDIS_URL)")
        parser.add_argument("--print", action="store_true", dest="print_only",
                            help="print the command line instead of running it")

    def handle(self, *args, host, port, processes, print_only, **options):
        if processes is None:
            processes = usable_cores() if settings.REDIS_URL else 1
        elif processes > 1 and not settings.REDIS_URL:
            raise CommandError(
                f"--processes {processes} needs Redis (set REDIS_URL). Without it each process keeps "
                "connection counts, routing health, presence and failed-login counters in its own memory and "
                "does not hear the others' revocations, so every process would apply the per-key limits in "
                "full. Run one process (--processes 1), or configure Redis.", returncode=2)
        command = serve_command(host=host, port=port, processes=processes)
        if print_only:
            self.stdout.write(" ".join(command))
            return
        if processes > 1 and port_in_use(host, port):
            # One server alone finds out itself; several would each fail (or, beside another
            # supervisor's SO_REUSEPORT sockets, silently share its port).
            raise CommandError(f"port {port} on {host} is in use; choose another with --port/OPENCLAW_PORT")
        os.execv(command[0], command)
