"""Fixtures of the chaos campaign: a private MariaDB the scenarios may stop and start, and the mode's sizes.

Short mode by default (CI); `VMPROTO_CHAOS_FULL=1` for the full size (or `python -m tests.chaos --full`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.chaos.context import ChaosContext, size_from_env
from vmproto.testing.mariadb import MariaDBConfig, MariaDBError, MariaDBServer, find_binary


@pytest.fixture(scope="session")
def chaos_mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    """Our own MariaDB (not the suite's shared one): the outage scenario stops it."""
    try:
        find_binary("mariadbd", "mysqld")
    except MariaDBError as exc:
        pytest.skip(str(exc))
    server = MariaDBServer(MariaDBConfig(tmp_path_factory.mktemp("chaosdb")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chaos(chaos_mariadb: MariaDBServer, tmp_path) -> ChaosContext:
    if chaos_mariadb.pid is None:  # a failed outage scenario may have left it stopped
        chaos_mariadb.start()
    return ChaosContext(chaos_mariadb, chaos_mariadb.params, tmp_path, size_from_env())
