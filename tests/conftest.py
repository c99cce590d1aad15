"""Shared fixtures. Data in ../shared is read in place; tests that need it skip with a reason when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VMPROTO_SHARED", ROOT.parent / "shared")).resolve()
REFERENCE = SHARED / "reference"
CORPUS = SHARED / "corpus"


def need_shared(path: Path) -> Path:
    """Return `path`, or skip the calling test when the shared data is not beside the clone."""
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (expected ../shared beside the clone, or VMPROTO_SHARED)")
    return path


@pytest.fixture
def reference_dir() -> Path:
    return need_shared(REFERENCE)


@pytest.fixture
def corpus_dir() -> Path:
    return need_shared(CORPUS)


@pytest.fixture(scope="session")
def mariadb(tmp_path_factory: pytest.TempPathFactory):
    """One private MariaDB for the whole run (vmproto.testing.mariadb); yields its MariaDBParams.

    Skips when mariadb-server is not installed. Tests that need a database create a uniquely named one
    and drop it afterwards (see tests/server/db/conftest.py).
    """
    from vmproto.testing.mariadb import MariaDBConfig, MariaDBError, MariaDBServer, find_binary

    try:
        find_binary("mariadbd", "mysqld")
    except MariaDBError as exc:
        pytest.skip(str(exc))
    server = MariaDBServer(MariaDBConfig(tmp_path_factory.mktemp("mariadb")))
    params = server.start()
    try:
        yield params
    finally:
        server.stop()
