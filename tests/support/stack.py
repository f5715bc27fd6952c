"""A real gateway stack in subprocesses, for end-to-end tests and the benchmark.

Processes started as subprocesses cannot see pytest-django's test database, so
the stack gets its own: an SQLite file in a temporary data directory, or, when
DATABASE_URL points at PostgreSQL, a fresh database beside it.
"""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from tests.support.mockllm import REPO_ROOT

# Variables of the test process that must not leak into the stack's processes.
_PRIVATE_ENV = ("DJANGO_SETTINGS_MODULE", "OPENCLAW_TEST_DB_NAME", "PYTEST_CURRENT_TEST")

# Gateway processes see a committed configuration change within one second
# (gateway/freshness.py; docs/operations.md, "Caches and how fast changes apply").
CONFIG_APPLIES_SECONDS = 1.1


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s")


class Stack:
    """Database + demo tenant + gateway process (+ optional Celery worker).

    `stop()` ends every process it started and drops the PostgreSQL database it created."""

    def __init__(self, data_dir: Path, *, mock_api_base: str, name: str = "e2e"):
        self.data_dir = data_dir
        self.mock_api_base = mock_api_base
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.env = {k: v for k, v in os.environ.items() if k not in _PRIVATE_ENV}
        self.env["OPENCLAW_DATA_DIR"] = str(data_dir)
        self.env["PYTHONUNBUFFERED"] = "1"
        # Every test connects from 127.0.0.1: one test's failed authentications must not
        # throttle the next test's (tests/e2e/test_auth_flood_e2e.py starts its own gateway).
        self.env.setdefault("OPENCLAW_AUTH_FAILURES_PER_ADDRESS", "100000")
        # Its own Celery queue: stacks (and the test process) may share one Redis broker.
        self.env["OPENCLAW_CELERY_QUEUE"] = f"openclaw-{name}-{os.getpid()}"
        base_url = os.environ.get("DATABASE_URL", "")
        if base_url.startswith("postgres"):
            self.pg_url = recreate_pg_database(base_url, f"openclaw_{name}_{os.getpid()}")
            self.env["DATABASE_URL"] = self.pg_url
            self.sqlite_path = None
        else:
            self.pg_url = None
            self.env.pop("DATABASE_URL", None)
            self.sqlite_path = data_dir / "openclaw.sqlite3"
        redis_url = os.environ.get("REDIS_URL", "")
        self.broker_url = redis_url or f"sqla+sqlite:///{data_dir / 'celery-broker.sqlite3'}"
        self.result_backend = redis_url or f"db+sqlite:///{data_dir / 'celery-results.sqlite3'}"
        self.port = None
        self.api_key = ""

    # --- lifecycle -------------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO_ROOT, env=self.env,
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def configure(self, script: str) -> str:
        """Run `script` in `manage.py shell` and wait until every gateway process of the
        stack applies what it changed; returns what it printed."""
        output = self.manage("shell", "-c", script)
        time.sleep(CONFIG_APPLIES_SECONDS)
        return output

    def prepare(self) -> "Stack":
        self.manage("migrate", "--noinput", "-v", "0")
        self.api_key = self.manage("setup_demo", "--mock-api-base", self.mock_api_base).strip().splitlines()[-1]
        return self

    def start_gateway(self, *, processes: int = 1, **extra_env: str) -> int:
        """One more gateway process, started as an operator would (`manage.py serve`).

        One process unless `processes` says otherwise (serve's own default with Redis is one
        per core): for N > 1, one supervisor running N server processes on the port
        (stack.processes holds the supervisor); returns once every one is ready."""
        port = free_port()
        env = {**self.env, **extra_env}
        command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--processes", str(processes)]
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=open(self.data_dir / f"gateway-{port}.log", "w"))
        self.processes.append((f"gateway:{port}", process))
        try:
            wait_for_port(port, process, "gateway")
            if processes > 1:
                self.wait_for_log(port, f"all {processes} gateway processes ready", process=process)
        except RuntimeError:
            process.kill()  # never leave a gateway that missed its start-up wait running
            raise
        self.port = self.port or port
        return port

    def start_worker(self) -> subprocess.Popen:
        from openclaw_site.processes import worker_command

        process = subprocess.Popen(worker_command(beat=False), cwd=REPO_ROOT, env=self.env,
                                   stdout=subprocess.DEVNULL, stderr=open(self.data_dir / "worker.log", "w"))
        self.processes.append(("worker", process))
        return process

    def celery_client(self):
        """A Celery client that sends to this stack's broker and queue (task names, no imports)."""
        from celery import Celery

        client = Celery("openclaw-test", broker=self.broker_url, backend=self.result_backend, set_as_current=False)
        client.conf.task_default_queue = self.env["OPENCLAW_CELERY_QUEUE"]
        return client

    def stop(self) -> None:
        for _name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _name, process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()
        if self.pg_url is not None:
            drop_pg_database(self.pg_url)

    def url(self, port: int | None = None) -> str:
        return f"ws://127.0.0.1:{port or self.port}/websocket"

    def log(self, port: int | None = None) -> str:
        return (self.data_dir / f"gateway-{port or self.port}.log").read_text()

    def wait_for_log(self, port: int, text: str, *, process: subprocess.Popen | None = None,
                     timeout: float = 90) -> str:
        """The first line of the gateway's log (from its start) that contains `text`, once it is there."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log(port).splitlines():
                if text in line:
                    return line
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"gateway exited with code {process.returncode}:\n{self.log(port)[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {text!r} in the gateway's log within {timeout}s:\n{self.log(port)[-3000:]}")
            time.sleep(0.05)

    # --- looking at the stack's database --------------------------------------------

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Run a read query against the stack's database ('%s' placeholders)."""
        if self.sqlite_path is not None:
            with closing(sqlite3.connect(self.sqlite_path, timeout=10)) as conn:
                return conn.execute(sql.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(self.pg_url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()


    def wait_for_rows(self, sql: str, params: tuple = (), *, count: int = 1, timeout: float = 10) -> list[tuple]:
        """Poll until the query returns `count` rows: usage is written just after the end frame."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.query(sql, params)
            if len(rows) >= count or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)


def recreate_pg_database(base_url: str, name: str) -> str:
    import psycopg

    parsed = urlparse(base_url)
    admin_url = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(parsed._replace(path=f"/{name}"))


def drop_pg_database(url: str) -> None:
    """Drop the database `url` names (a stack's own), closing any connection left to it."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin_url = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
