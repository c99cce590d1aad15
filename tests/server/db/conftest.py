"""Fixtures for the database layer tests: a fresh, uniquely named database per test on the session's
private MariaDB (the `mariadb` fixture in tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from vmproto.server.db.connection import Connection, ConnectParams
from vmproto.testing.mariadb import MariaDBParams


async def _admin(mariadb: MariaDBParams) -> Connection:
    return await Connection.open(ConnectParams(database="", user=mariadb.user, unix_socket=mariadb.unix_socket))


@pytest.fixture
async def db(mariadb: MariaDBParams) -> AsyncIterator[ConnectParams]:
    """ConnectParams of an empty database created for this test and dropped after it."""
    name = f"vmp_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin(mariadb)
    await admin.execute(f"CREATE DATABASE `{name}`")
    try:
        yield ConnectParams(database=name, user=mariadb.user, unix_socket=mariadb.unix_socket)
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS `{name}`")
        await admin.aclose()


@pytest.fixture
async def admin(mariadb: MariaDBParams) -> AsyncIterator[Connection]:
    """A root session without a default database."""
    conn = await _admin(mariadb)
    try:
        yield conn
    finally:
        await conn.aclose()
