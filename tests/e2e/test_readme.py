"""The README's Python example, run as written against a real gateway (only the URL and key
it says to fill in are replaced)."""
import re
import subprocess
import sys

import pytest

from tests.support.mockllm import REPO_ROOT

pytestmark = pytest.mark.e2e


def readme_python_example() -> str:
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README has no Python example"
    return blocks[0]


def test_the_readme_python_example_streams_a_completion(stack):
    code = readme_python_example()
    placeholder = 'asyncio.run(main("ws://127.0.0.1:8000/websocket", "ocw_..."))'
    assert placeholder in code, "the example's call line changed: update this test"
    code = code.replace(placeholder, f"asyncio.run(main({stack.url()!r}, {stack.api_key!r}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "'auth_ok'" in lines[0]
    assert "'llm_response_end'" in lines[-1] and "'cost_usd'" in lines[-1], lines[-3:]
    assert len(lines) > 3  # tokens printed in between
