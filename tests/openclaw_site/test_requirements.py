"""Dependencies are locked: exact pins with hashes, compiled from the .in source lists.

These test the requirements files at the repository's root, not a module; they sit with
the composition root, which owns how the gateway is installed and started.

`make` installs with `pip install --require-hashes`; these tests catch a hand-edited lock
file (a loose pin, a missing hash) or a direct dependency added to an .in file but never
compiled into its lock file.
"""
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.mockllm import REPO_ROOT

LOCK_FILES = ["requirements.txt", "requirements-dev.txt"]
SOURCES = {"requirements.in": "requirements.txt", "requirements-dev.in": "requirements-dev.txt"}
SHA256_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def logical_lines(path: Path) -> list[str]:
    """The file's requirement lines: continuations joined, comments and pip options dropped."""
    text = path.read_text().replace("\\\n", " ")
    lines = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line and not line.startswith("-"):  # -c, --extra-index-url, --find-links ...
            lines.append(line)
    return lines


def requirement_lines(path: Path) -> list[tuple[Requirement, list[str]]]:
    """Each requirement with the options that follow it on its (joined) line."""
    entries = []
    for line in logical_lines(path):
        spec, *options = line.split()
        entries.append((Requirement(spec), options))
    return entries


def exact_version(requirement: Requirement) -> str | None:
    """The version of an `==X` pin without wildcards, else None."""
    specifiers = list(requirement.specifier)
    if len(specifiers) == 1 and specifiers[0].operator == "==" and "*" not in specifiers[0].version:
        return specifiers[0].version
    return None


def locked_versions(lock_file: str) -> dict[str, str | None]:
    return {canonicalize_name(req.name): exact_version(req) for req, _ in requirement_lines(REPO_ROOT / lock_file)}


@pytest.mark.parametrize("lock_file", LOCK_FILES)
def test_every_locked_requirement_is_pinned_exactly_with_hashes(lock_file):
    entries = requirement_lines(REPO_ROOT / lock_file)
    assert len(entries) > 10, f"{lock_file} looks empty or unparsed"
    loose = [str(req) for req, _ in entries if exact_version(req) is None]
    unhashed = [str(req) for req, options in entries if not any(SHA256_HASH.fullmatch(o) for o in options)]
    assert loose == [], f"{lock_file}: not pinned with ==: {loose}"
    assert unhashed == [], f"{lock_file}: no --hash=sha256: {unhashed}"


@pytest.mark.parametrize("source,lock_file", SOURCES.items())
def test_every_direct_dependency_is_locked_at_its_pin(source, lock_file):
    locked = locked_versions(lock_file)
    direct = requirement_lines(REPO_ROOT / source)
    assert direct, f"{source} lists no packages"
    missing, drifted = [], []
    for requirement, _ in direct:
        name = canonicalize_name(requirement.name)
        if name not in locked:
            missing.append(requirement.name)
        elif exact_version(requirement) not in (None, locked[name]):
            drifted.append(f"{requirement.name}: {source} says {requirement.specifier}, {lock_file} has {locked[name]}")
    assert missing == [], f"in {source} but not in {lock_file} (run make lock): {missing}"
    assert drifted == [], drifted


def test_the_two_lock_files_agree_on_shared_packages():
    # Both are installed into one environment; a disagreement fails the install.
    runtime, dev = locked_versions("requirements.txt"), locked_versions("requirements-dev.txt")
    assert {name: (runtime[name], dev[name]) for name in runtime.keys() & dev.keys()
            if runtime[name] != dev[name]} == {}
