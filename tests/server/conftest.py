"""Fixtures for the central server tests: an in-process `Server` on loopback with its own database on the
session's private MariaDB (the `mariadb` fixture of tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from tests.server.client import PASSWORD, WireClient, cached_key
from vmproto.config import Config, defaults
from vmproto.server.app import Server
from vmproto.server.db.connection import Connection, ConnectParams
from vmproto.server.pbspool import PcapSpool
from vmproto.testing.mariadb import MariaDBParams

StartServer = Callable[..., Awaitable[Server]]

# Creating the central schema takes seconds (dozens of partitioned InnoDB tables), so databases are recycled:
# after a test every table is emptied and the database goes back to this free list (per MariaDB instance).
_FREE_DATABASES: dict[str, list[str]] = {}


async def _recycle(admin: Connection, database: str) -> bool:
    """Empty every table of `database`; False when that failed (the database is dropped instead)."""
    try:
        tables = await admin.execute(
            f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{database}' "
            "AND table_type = 'BASE TABLE'")
        for (name,) in tables.rows:
            table = f"`{database}`.`{name.decode()}`"
            if (await admin.execute(f"SELECT 1 FROM {table} LIMIT 1")).rows:
                await admin.execute(f"TRUNCATE TABLE {table}")  # also resets AUTO_INCREMENT
        return True
    except Exception:  # noqa: BLE001 - any trouble: fall back to dropping the database
        return False


def server_config(mariadb: MariaDBParams, database: str, **options: object) -> Config:
    cfg = defaults()
    cfg.values.update(server_bind="127.0.0.1", server_bind_port=0, server_password=PASSWORD,
                      mysqlsocket=mariadb.unix_socket, mysqlusername=mariadb.user, mysqldb=database,
                      server_rsa_key_pool=0)
    for name, value in options.items():
        if name in cfg.values:
            cfg.values[name] = value
        else:
            cfg.unknown[name] = [value]  # vmproto-only knobs read with cfg.get(name, default)
    return cfg


@pytest.fixture
async def start_server(mariadb: MariaDBParams, tmp_path, nursery) -> AsyncIterator[StartServer]:
    """`await start_server(option=value, ...)` → a running Server (its database dropped afterwards)."""
    started: list[tuple[Server, trio.Event, str]] = []

    free = _FREE_DATABASES.setdefault(mariadb.unix_socket, [])

    async def start(keylog=None, default_sink: bool = False, **options: object) -> Server:
        """`default_sink`: the server's own packet sink (central analysis of mirrored packets, spec §9.13)
        instead of a raw pcap spool the tests can read back."""
        database = free.pop() if free else f"vmp_srv_{uuid.uuid4().hex[:10]}"
        cfg = server_config(mariadb, database, **options)
        sink = None if default_sink else PcapSpool(tmp_path / f"spool{len(started)}")
        server = Server(cfg, key_factory=cached_key, sink=sink, keylog_path=keylog)
        done = trio.Event()

        async def run(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
            try:
                await server.run(task_status=task_status)
            finally:
                done.set()

        await nursery.start(run)
        started.append((server, done, database))
        return server

    yield start
    admin = await Connection.open(ConnectParams(database="", user=mariadb.user, unix_socket=mariadb.unix_socket))
    try:
        for server, done, database in started:
            server.request_shutdown()
            with trio.fail_after(20):
                await done.wait()
            if await _recycle(admin, database):
                free.append(database)
            else:
                await admin.execute(f"DROP DATABASE IF EXISTS `{database}`")
    finally:
        await admin.aclose()


@pytest.fixture
async def server(start_server: StartServer) -> Server:
    return await start_server()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[WireClient]]]:
    """`await connect(port, machine)` → a WireClient closed at teardown."""
    clients: list[WireClient] = []

    async def open_client(port: int, machine=None) -> WireClient:
        client = await WireClient.connect(port, machine)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


async def db_session(mariadb: MariaDBParams, server: Server) -> Connection:
    """A session on the server's database (caller closes it)."""
    return await Connection.open(ConnectParams(database=server.cfg.mysqldb, user=mariadb.user,
                                               unix_socket=mariadb.unix_socket))
