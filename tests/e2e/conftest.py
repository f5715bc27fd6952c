"""End-to-end fixtures: a real gateway (daphne) and the mock LLM as processes."""
from __future__ import annotations

import pytest

from tests.support.stack import Stack


@pytest.fixture(scope="session")
def stack(mockllm, tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("stack"), mock_api_base=mockllm.api_base).prepare()
    stack.start_gateway()
    yield stack
    stack.stop()
