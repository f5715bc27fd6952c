"""Run the whole embedded stack: mock LLM, Celery worker (with beat) and the gateway.

`make run` calls this after installing and migrating. It prepares the demo
tenant (with a week of sample traffic the first time), starts the three
processes, prints how to connect, and stops them all
on Ctrl-C or SIGTERM.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from openclaw_site.demo import demo_setup
from openclaw_site.processes import gateway_command, mockllm_command, worker_command


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _wait_for_port(host: str, port: int, process: subprocess.Popen, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CommandError(f"{name} exited with code {process.returncode}; see its output above")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise CommandError(f"{name} did not start listening on {host}:{port} within {timeout:.0f}s")


class Command(BaseCommand):
    help = "Run the mock LLM, a Celery worker and the gateway together (the embedded default)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=os.environ.get("OPENCLAW_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("OPENCLAW_PORT", "8000")))
        parser.add_argument("--mock-port", type=int, default=int(os.environ.get("OPENCLAW_MOCKLLM_PORT", "8100")))
        parser.add_argument("--no-mock", action="store_true", help="do not start the mock LLM")
        parser.add_argument("--no-worker", action="store_true", help="do not start the Celery worker")

    def handle(self, *args, host, port, mock_port, no_mock, no_worker, **options):
        for name, number, wanted in (("gateway", port, True), ("mock LLM", mock_port, not no_mock)):
            if wanted and not _port_free(host, number):
                raise CommandError(f"port {number} for the {name} is in use; choose another with "
                                   f"{'--port/OPENCLAW_PORT' if name == 'gateway' else '--mock-port/OPENCLAW_MOCKLLM_PORT'}")
        demo = demo_setup(mock_api_base=f"http://127.0.0.1:{mock_port}/v1", sample_traffic=True)
        children: list[tuple[str, subprocess.Popen]] = []

        def start(name: str, command: list[str]) -> subprocess.Popen:
            process = subprocess.Popen(command, cwd=settings.BASE_DIR)
            children.append((name, process))
            return process

        def stop_all(*_args) -> None:
            for _name, process in reversed(children):
                if process.poll() is None:
                    process.terminate()
            for _name, process in reversed(children):
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()

        signal.signal(signal.SIGTERM, lambda *_: (stop_all(), sys.exit(0)))
        try:
            if not no_mock:
                mock = start("mock LLM", mockllm_command(host="127.0.0.1", port=mock_port))
                _wait_for_port("127.0.0.1", mock_port, mock, "mock LLM")
            if not no_worker:
                start("Celery worker", worker_command(beat=True))
            gateway = start("gateway", gateway_command(host=host, port=port))
            _wait_for_port(host, port, gateway, "gateway")
            shown = "127.0.0.1" if host in ("0.0.0.0", "127.0.0.1") else host
            lines = [
                f"WebSocket URL: ws://{shown}:{port}/websocket",
                f"Admin URL:     http://{shown}:{port}/admin/  (login: {demo.admin_username} / {demo.admin_password})",
                f"Demo API key:  {demo.api_key}",
                f"Demo models:   {', '.join(demo.models)}",
                f"Demo routes:   {', '.join(demo.routes)}",
                f"Dashboard:     http://{shown}:{port}/  (login: {demo.dashboard_username} / {demo.dashboard_password})",
            ]
            self.stdout.write("\n".join(lines))
            self.stdout.flush()
            while True:
                for name, process in children:
                    if process.poll() is not None:
                        raise CommandError(f"{name} stopped unexpectedly (exit code {process.returncode})")
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            stop_all()
