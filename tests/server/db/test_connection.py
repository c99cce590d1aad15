"""Sessions and pool on a real MariaDB: clear privilege errors, lost-connection recovery, store resend
after a connection dies mid-message, and the supervised server restarting after a crash."""

from __future__ import annotations

import datetime as dt
import os
import signal
import uuid

import pytest
import trio

from vmproto.server.db.connection import Connection, ConnectParams, Pool
from vmproto.server.db.errors import ConnectionLostError, PrivilegeError, SqlError
from vmproto.server.db.schema import ensure_schema
from vmproto.server.db.store import StoreMessage, StoreWriter
from vmproto.testing.mariadb import MariaDBConfig, supervise_mariadb

DAY = dt.date(2026, 11, 26)


@pytest.fixture
async def limited_user(db, admin):
    """A password account that may create tables but not routines, on the test database only."""
    user = f"vmp_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY 'pw'")
    await admin.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, INDEX, DROP ON `{db.database}`.* TO '{user}'@'localhost'"
    )
    try:
        yield ConnectParams(database=db.database, user=user, password="pw", unix_socket=db.unix_socket)
    finally:
        await admin.execute(f"DROP USER '{user}'@'localhost'")


async def test_missing_create_routine_is_named(limited_user):
    conn = await Connection.open(limited_user)
    try:
        with pytest.raises(PrivilegeError) as info:
            await ensure_schema(conn, today=DAY)
        err = info.value
        assert err.privilege == "CREATE ROUTINE"
        assert str(err).startswith(
            f"CREATE ROUTINE privilege missing for user {limited_user.user} on db {limited_user.database}"
        )
    finally:
        await conn.aclose()


async def test_table_privilege_named_from_the_server_message(limited_user):
    conn = await Connection.open(limited_user)
    try:
        with pytest.raises(PrivilegeError) as info:
            await conn.execute("SELECT * FROM mysql.user")
        assert info.value.privilege == "SELECT"
        assert info.value.errno == 1142
    finally:
        await conn.aclose()


async def test_bad_password_and_unknown_database(db, limited_user):
    with pytest.raises(PrivilegeError) as info:
        await Connection.open(ConnectParams(database=db.database, user=limited_user.user, password="nope",
                                            unix_socket=db.unix_socket))
    assert info.value.errno == 1045
    with pytest.raises(PrivilegeError):
        await Connection.open(ConnectParams(database="no_such_db", user=limited_user.user, password="pw",
                                            unix_socket=db.unix_socket))
    with pytest.raises(ConnectionLostError):
        await Connection.open(ConnectParams(database=db.database, user="root", unix_socket="/nonexistent/sock"))


async def _kill(admin: Connection, conn: Connection) -> None:
    thread = (await conn.execute("SELECT CONNECTION_ID()")).rows[0][0]
    await admin.execute(b"KILL " + thread)


async def test_lost_connection_breaks_session_and_pool_reconnects(db, admin):
    pool = Pool(db, size=1)
    try:
        async with pool.connection() as conn:
            await _kill(admin, conn)
            with pytest.raises(ConnectionLostError):
                await conn.execute("SELECT 1")
            assert conn.broken
            with pytest.raises(ConnectionLostError):
                await conn.execute("SELECT 1")
        # The broken session was dropped; the next borrower gets a fresh one.
        async with pool.connection() as conn2:
            assert conn2 is not conn
            assert (await conn2.execute("SELECT 2")).rows == [(b"2",)]
            await _kill(admin, conn2)
        assert (await pool.run("SELECT 3", retries=1)).rows == [(b"3",)]
        # SQL errors do not break the session.
        async with pool.connection() as conn3:
            with pytest.raises(SqlError):
                await conn3.execute("SELECT * FROM nope")
            assert not conn3.broken
    finally:
        await pool.aclose()


async def test_store_writer_survives_lost_connection(db, admin):
    setup = await Connection.open(db)
    await ensure_schema(setup, today=DAY)
    await setup.aclose()
    pool = Pool(db, size=1)
    writer = StoreWriter(pool, 10, max_backoff=0.2)
    msg = StoreMessage(2, 10, (b"set @a = getIdOrInsertUA('x'); INSERT INTO cdr_ua (ua) VALUES (concat('y', @a))",))
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            assert (await writer.submit(msg)).applied
            async with pool.connection() as conn:
                await _kill(admin, conn)
            # The writer's pooled session is dead; the next message reconnects and the resend is skipped.
            assert not (await writer.submit(msg)).applied
            assert writer.applied == 1 and writer.duplicates == 1
            nursery.cancel_scope.cancel()
        check = await Connection.open(db)
        assert (await check.execute("SELECT ua FROM cdr_ua ORDER BY id")).rows == [(b"x",), (b"y1",)]
        await check.aclose()
    finally:
        await pool.aclose()


async def test_supervisor_restarts_a_crashed_server(tmp_path):
    config = MariaDBConfig(tmp_path / "m")
    restarts = []
    async with trio.open_nursery() as nursery:
        params = await nursery.start(lambda task_status: supervise_mariadb(
            config, task_status=task_status, on_restart=restarts.append))
        conn_params = ConnectParams(database="", user=params.user, unix_socket=params.unix_socket)
        conn = await Connection.open(conn_params)
        first_pid = int(config.pid_file.read_text())
        os.kill(first_pid, signal.SIGKILL)
        with pytest.raises(ConnectionLostError):
            with trio.fail_after(10):
                await conn.execute("SELECT SLEEP(5)")
        with trio.fail_after(30):
            while True:
                try:
                    again = await Connection.open(conn_params)
                    break
                except ConnectionLostError:
                    await trio.sleep(0.1)
        assert (await again.execute("SELECT 1")).rows == [(b"1",)]
        assert restarts == [1] and int(config.pid_file.read_text()) != first_pid
        await again.aclose()
        await conn.aclose()
        nursery.cancel_scope.cancel()
    assert not config.pid_file.exists()
