"""Run one gateway process (production): daphne with the gateway's flags.

The server's frame limits, heartbeat and connection-age settings must follow the
gateway's own settings (see `openclaw_site.processes.gateway_command`); this command
derives them, so operators never copy flags by hand. It replaces itself with the
server process (exec), so signals from a process manager reach daphne directly.
"""
from __future__ import annotations

import os

from django.core.management.base import BaseCommand

from openclaw_site.processes import gateway_command


class Command(BaseCommand):
    help = "Serve the gateway (WebSocket, admin, health endpoints) on HOST:PORT with the flags its settings need."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("OPENCLAW_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("OPENCLAW_PORT", "8000")))
        parser.add_argument("--print", action="store_true", dest="print_only",
                            help="print the server command line instead of running it")

    def handle(self, *args, host, port, print_only, **options):
        command = gateway_command(host=host, port=port)
        if print_only:
            self.stdout.write(" ".join(command))
            return
        os.execv(command[0], command)
