"""The data directory (openclaw_site/datadir.py): private (0700, files 0600) from the first
migrate, an existing installation's loose modes fixed at start, SQLite's side files included."""
import os
import stat
from pathlib import Path

from tests.support.environments import manage, run_django


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_data_directory_is_private_after_migrate(tmp_path):
    data_dir = tmp_path / "var"  # created by the gateway, not by the test
    result = manage({"OPENCLAW_DATA_DIR": str(data_dir)}, "migrate", "--noinput", "-v", "0")
    assert result.returncode == 0, result.stderr
    assert mode_of(data_dir) == 0o700
    files = {path.name: mode_of(path) for path in data_dir.iterdir() if path.is_file()}
    assert {mode_of(path) for path in data_dir.iterdir() if path.is_dir()} <= {0o700}  # e.g. static/
    assert {"openclaw.sqlite3", "celery-broker.sqlite3", "celery-results.sqlite3", "secret_key",
            "credential_key"} <= set(files)
    assert set(files.values()) == {0o600}, files


def test_an_existing_installations_world_readable_files_are_fixed_at_start(tmp_path):
    data_dir = tmp_path / "var"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    for name in ("openclaw.sqlite3", "openclaw.sqlite3-wal", "openclaw.sqlite3-shm", "celerybeat-schedule"):
        (data_dir / name).write_bytes(b"")
        os.chmod(data_dir / name, 0o644)
    result = run_django({"OPENCLAW_DATA_DIR": str(data_dir)}, "print('started')")
    assert result.returncode == 0, result.stderr
    assert mode_of(data_dir) == 0o700
    assert {path.name: mode_of(path) for path in data_dir.iterdir() if path.name.startswith(("openclaw", "celerybeat"))} \
        == dict.fromkeys(["openclaw.sqlite3", "openclaw.sqlite3-wal", "openclaw.sqlite3-shm", "celerybeat-schedule"],
                         0o600)


def test_sqlite_gives_its_wal_and_shm_files_the_database_files_mode(tmp_path):
    # Why creating the database file 0600 first is enough (openclaw_site/datadir.py).
    import sqlite3

    from openclaw_site.datadir import secure_data_dir

    database = tmp_path / "data" / "db.sqlite3"
    secure_data_dir(database.parent, [database])
    previous = os.umask(0o022)
    try:
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE t (a)")
            assert mode_of(database.with_name("db.sqlite3-wal")) == 0o600
            assert mode_of(database.with_name("db.sqlite3-shm")) == 0o600
        conn.close()
    finally:
        os.umask(previous)
