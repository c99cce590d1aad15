"""prepare_database from nothing, digest pruning and the maintenance loop."""

from __future__ import annotations

import dataclasses
import uuid

import pytest
import trio

from vmproto.server.db import (
    Connection,
    Pool,
    PrivilegeError,
    maintenance_loop,
    prepare_database,
    prune_applied_digests,
)


async def test_prepare_creates_database_and_schema(db, admin):
    params = dataclasses.replace(db, database=f"vmp_prep_{uuid.uuid4().hex[:8]}")
    try:
        report = await prepare_database(params)
        assert "cdr" in report.created_tables and report.created_functions
        again = await prepare_database(params)
        assert not again.created_tables and not again.added_columns and not again.created_functions
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS `{params.database}`")


async def test_prepare_names_missing_create_privilege(db, admin):
    user = f"vmp_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'pw'")
    try:
        params = dataclasses.replace(db, database="vmp_never_created", user=user, password="pw")
        with pytest.raises(PrivilegeError) as info:
            await prepare_database(params)
        assert str(info.value).startswith(f"CREATE privilege missing for user {user} on db vmp_never_created")
    finally:
        await admin.execute(f"DROP USER '{user}'@'localhost'")


async def test_prune_and_loop(db):
    await prepare_database(db, create_database=False)
    conn = await Connection.open(db)
    pool = Pool(db, size=1)
    try:
        await conn.execute(
            "INSERT INTO vmproto_store_applied VALUES (1, REPEAT('a', 32), 10, NOW() - INTERVAL 8 DAY), "
            "(1, REPEAT('b', 32), 10, NOW())"
        )
        assert await prune_applied_digests(conn) == 1
        await conn.execute("INSERT INTO vmproto_store_applied VALUES (1, REPEAT('c', 32), 10, NOW() - INTERVAL 9 DAY)")
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: maintenance_loop(pool, interval=3600, task_status=task_status))
            with trio.fail_after(10):
                while (await conn.execute("SELECT count(*) FROM vmproto_store_applied")).rows != [(b"1",)]:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    finally:
        await pool.aclose()
        await conn.aclose()
