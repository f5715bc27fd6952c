"""The data directory holds live secrets: only the gateway's own user may read it.

The embedded default keeps its SQLite database (sessions, which work as admin
cookies; key hashes; usage), the Celery broker files and the generated
development secrets under OPENCLAW_DATA_DIR. The directory is made 0700 and
every file directly in it 0600, at every start (so installations made before
this rule are fixed too).

SQLite creates a database file with mode 0644 (less the umask), and its
`-wal`, `-shm` and `-journal` files take the database file's mode. So each
SQLite file the process will use is created here first, empty (a valid empty
database) and 0600, before SQLite opens it.
"""
from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def secure_data_dir(data_dir: Path, sqlite_files: Iterable[Path] = (), *, create: bool = True) -> None:
    """Make `data_dir` 0700 and its files 0600, creating it and the given SQLite files when missing."""
    try:
        if create:
            data_dir.mkdir(parents=True, exist_ok=True, mode=DIRECTORY_MODE)
        if not data_dir.is_dir():
            return
        _restrict(data_dir, DIRECTORY_MODE)
        for path in sqlite_files:
            path = Path(path)
            if path.parent.is_dir():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))  # never truncates
        for entry in data_dir.iterdir():
            # Symlinks are left alone: chmod would follow them out of the directory.
            if entry.is_file() and not entry.is_symlink():
                _restrict(entry, FILE_MODE)
    except OSError as error:
        # A directory owned by another user (a mounted volume) cannot be changed;
        # say so rather than refuse to start.
        print(f"openclaw: cannot restrict the modes in {data_dir}: {error}", file=sys.stderr)


def _restrict(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) != mode:
        os.chmod(path, mode)


def sqlite_path_of(url_or_name) -> Path | None:
    """The file behind a Django SQLite NAME or an SQLAlchemy `sqla+sqlite:///` / `db+sqlite:///` URL."""
    text = str(url_or_name)
    for prefix in ("sqla+sqlite:///", "db+sqlite:///", "sqlite:///"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    else:
        if "://" in text or text in ("", ":memory:") or text.startswith("file:"):
            return None
    return Path(text) if text else None
