"""End-to-end fixtures: a real gateway (daphne) and the mock LLM as processes, and
headless Chromium for the tests that drive a browser."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.support.dashboard import prepare_dashboard
from tests.support.stack import Stack

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def stack(mockllm, tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack"), mock_api_base=mockllm.api_base).prepare()
    stack.start_gateway()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def dashboard_stack(mockllm, tmp_path_factory):
    """One gateway for every dashboard browser test (its own database), a Celery worker,
    an owner and an auditor with passwords, two keys and a few requests already logged
    (tests/support/dashboard.py)."""
    stack = Stack(tmp_path_factory.mktemp("dashboard"), mock_api_base=mockllm.api_base, name="dashboard")
    try:
        stack.prepare()
        stack.start_gateway()
        stack.start_worker()
        yield prepare_dashboard(stack)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's package) through Playwright, one per test module:
    Playwright's sync API must not outlive the module into other modules' async tests."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed (.ci/run installs Debian's chromium package)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()
