"""docs/protocol.md lists every error and close code with the tests that produce them."""
import ast
import re
from pathlib import Path

from gateway.protocol import CloseCode, ErrorCode

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "protocol.md").read_text()


def table(heading: str) -> dict[int, str]:
    section = DOC.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"^\|\s*(\d{3,4})\s*\|", line)
        if match:
            rows[int(match.group(1))] = line.rsplit("|", 2)[-2]
    return rows


def defined_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def referenced_tests(cell: str) -> list[tuple[str, str]]:
    refs, current_file = [], None
    for file, name in re.findall(r"`(?:(tests/[\w/]+\.py))?::(\w+)`", cell):
        current_file = file or current_file
        refs.append((current_file, name))
    return refs


def test_every_code_is_documented_with_a_test_or_reserved():
    errors, closes = table("Error codes"), table("Close codes")
    reserved = DOC.split("Codes reserved for later versions", 1)[1].split("\n\n", 1)[0]
    for code in ErrorCode:
        assert code.value in errors or f"error {code.value}" in reserved, f"error {code.value} undocumented"
    for code in CloseCode:
        assert code.value in closes or f"{code.value}" in reserved, f"close {code.value} undocumented"


def test_every_documented_code_names_tests_that_exist():
    for heading in ("Error codes", "Close codes"):
        for code, cell in table(heading).items():
            refs = referenced_tests(cell)
            assert refs, f"{heading} {code} names no test"
            for file, name in refs:
                assert name in defined_functions(ROOT / file), f"{heading} {code}: {file}::{name} does not exist"
