"""The embedded default as a user runs it: `manage.py run_gateway`, and a real Celery worker."""
import asyncio
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import websockets

from tests.support.frames import collect, next_frame, send_frame, text_of
from tests.support.mockllm import REPO_ROOT
from tests.support.stack import free_port

pytestmark = pytest.mark.e2e


def start_run_gateway(data_dir, port, mock_port):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "OPENCLAW_TEST_DB_NAME")}
    env.update(OPENCLAW_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=REPO_ROOT, env=env,
                   check=True, timeout=120)
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_gateway", "--port", str(port), "--mock-port", str(mock_port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def read_banner(process, timeout=90) -> dict[str, str]:
    banner = {}
    deadline = time.monotonic() + timeout
    while len(banner) < 6 and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.match(r"^(WebSocket URL|Admin URL|Demo API key|Demo models|Demo routes|Dashboard):\s+(.*)$", line.strip())
        if match:
            banner[match.group(1)] = match.group(2)
    return banner


def admin_logs_in(admin_url: str, username: str, password: str) -> bool:
    """Log in to the admin with the printed login, as a person would with a browser."""
    import http.cookiejar
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login_url = admin_url + "login/?next=/admin/"
    form = opener.open(login_url, timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password,
                                   "next": "/admin/"}).encode()
    page = opener.open(urllib.request.Request(login_url, data=data, headers={"Referer": login_url}), timeout=10)
    body = page.read().decode()
    return urllib.parse.urlparse(page.geturl()).path == "/admin/" and 'id="logout-form"' in body


def dashboard_overview(dashboard_url: str, username: str, password: str) -> str:
    """Sign in to the dashboard with the printed login; the page it lands on."""
    import http.cookiejar
    import urllib.parse
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    login_url = dashboard_url + "accounts/login/"
    form = opener.open(login_url, timeout=10).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "username": username, "password": password,
                                   "next": ""}).encode()
    page = opener.open(urllib.request.Request(login_url, data=data, headers={"Referer": login_url}), timeout=10)
    assert urllib.parse.urlparse(page.geturl()).path == "/orgs/demo/", page.geturl()
    return page.read().decode()


def stop(process):
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


async def stream_once(url, key, model="gpt-4-turbo"):
    async with websockets.connect(url) as ws:
        await send_frame(ws, {"type": "auth", "token": key})
        assert (await next_frame(ws))["type"] == "auth_ok"
        await send_frame(ws, {"type": "llm_request", "request_id": "hello", "model": model,
                              "prompt": "Write a short poem about a rainy day."})
        return (await collect(ws, timeout=30))["hello"]


def test_run_gateway_prints_how_to_connect_and_serves_the_demo(tmp_path):
    port, mock_port = free_port(), free_port()
    process = start_run_gateway(tmp_path, port, mock_port)
    try:
        banner = read_banner(process)
        assert banner["WebSocket URL"] == f"ws://127.0.0.1:{port}/websocket", banner
        assert f"http://127.0.0.1:{port}/admin/" in banner["Admin URL"] and "admin /" in banner["Admin URL"]
        assert banner["Demo models"] == "gpt-4-turbo, claude-3-opus"
        assert banner["Demo routes"] == "best_available_general"
        admin_url, login = re.match(r"^(\S+)\s+\(login: (\S+) / (\S+)\)$", banner["Admin URL"]).group(1, 3)
        assert admin_logs_in(admin_url, "admin", login) and not admin_logs_in(admin_url, "admin", login + "x")
        dashboard_url, owner, owner_password = re.match(r"^(\S+)\s+\(login: (\S+) / (\S+)\)$",
                                                        banner["Dashboard"]).group(1, 2, 3)
        assert dashboard_url == f"http://127.0.0.1:{port}/" and owner == "demo-owner"
        overview = dashboard_overview(dashboard_url, owner, owner_password)
        assert "Top models this month" in overview and "gpt-4-turbo" in overview and "Monthly spend" in overview
        first_key = banner["Demo API key"]
        frames = asyncio.run(stream_once(banner["WebSocket URL"], first_key))
        assert frames[-1]["type"] == "llm_response_end" and len(text_of(frames)) > 0
        # The demo route picks a deployment by latency and says so.
        routed = asyncio.run(stream_once(banner["WebSocket URL"], first_key, model="best_available_general"))
        route = routed[0]["route"]
        assert route["route"] == "best_available_general" and route["strategy"] == "latency", route
        assert route["deployment"] in ("gpt-4-turbo", "claude-3-opus") and route["reason"], route
        assert routed[-1]["type"] == "llm_response_end" and len(text_of(routed)) > 0
    finally:
        stop(process)
    # Run again: same URL and login, a fresh key; the data is reused.
    process = start_run_gateway(tmp_path, port, mock_port)
    try:
        again = read_banner(process)
        assert again["WebSocket URL"] == banner["WebSocket URL"] and again["Admin URL"] == banner["Admin URL"]
        assert again["Dashboard"] == banner["Dashboard"]
        assert again["Demo API key"] != first_key
        frames = asyncio.run(stream_once(again["WebSocket URL"], again["Demo API key"]))
        assert frames[-1]["type"] == "llm_response_end"
    finally:
        stop(process)


def test_a_real_celery_worker_rolls_up_usage(stack):
    asyncio.run(stream_for_usage(stack))
    stack.wait_for_rows("SELECT 1 FROM billing_usagerecord WHERE client_request_id = %s", ("for-rollup",))
    stack.start_worker()
    client = stack.celery_client()
    result = client.send_task("billing.tasks.rollup_usage_day").get(timeout=90)
    assert result["rows"] >= 1
    # Idempotent: a second run rebuilds the same rows rather than adding to them.
    again = client.send_task("billing.tasks.rollup_usage_day", args=[result["day"]]).get(timeout=60)
    assert again == result
    rows = stack.query("SELECT SUM(requests) FROM billing_usagedailyrollup")
    total = stack.query("SELECT COUNT(*) FROM billing_usagerecord")
    assert rows[0][0] == total[0][0]


async def stream_for_usage(stack):
    async with websockets.connect(stack.url()) as ws:
        await send_frame(ws, {"type": "auth", "token": stack.api_key})
        await next_frame(ws)
        await send_frame(ws, {"type": "llm_request", "request_id": "for-rollup", "model": "gpt-4-turbo",
                              "prompt": "x [[mock tokens=3 rate=0 ttft_ms=0]]"})
        await collect(ws)
