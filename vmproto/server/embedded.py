"""Embedded database mode: with no `mysqlhost`/`mysqlsocket` configured the central runs its own MariaDB under
its data directory (unix socket only, no TCP port), supervised as a child for the server's lifetime.

A server killed with SIGKILL leaves its mariadbd running (it lives in its own session so that a terminal's
Ctrl-C reaches only the server). The next start finds it through the pid file and stops it cleanly before
starting a fresh supervised one, so the data directory is never opened twice.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import trio

from vmproto.logs import log_event
from vmproto.server.db.connection import Connection, ConnectParams, quote_identifier
from vmproto.testing.mariadb import MariaDBConfig, MariaDBError, supervise_mariadb

__all__ = ["EmbeddedDatabaseError", "start_embedded", "stop_stale_server", "DEFAULT_DATADIR"]

log = logging.getLogger("vmproto.server.embedded")

DEFAULT_DATADIR = "./var/vmproto-server"
_SOCKET_PATH_MAX = 107


class EmbeddedDatabaseError(Exception):
    """The embedded MariaDB could not be set up (the message says what to fix)."""


def _mariadb_config(datadir: Path) -> MariaDBConfig:
    db_root = datadir.resolve() / "mariadb"
    config = MariaDBConfig(db_root, innodb_buffer_pool_size="128M", innodb_log_file_size="64M",
                           max_connections=200, stop_timeout=20.0)
    if len(str(config.socket_path)) > _SOCKET_PATH_MAX:
        raise EmbeddedDatabaseError(
            f"datadir {datadir} is too deep: the socket path {config.socket_path} exceeds the {_SOCKET_PATH_MAX}-byte "
            "unix socket limit; choose a shorter datadir"
        )
    return config


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_mariadbd(pid: int, config: MariaDBConfig) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    exe = os.path.basename(cmdline[0].decode(errors="replace")) if cmdline else ""
    return exe in ("mariadbd", "mysqld") and f"--datadir={config.db_dir}".encode() in cmdline


async def stop_stale_server(config: MariaDBConfig, timeout: float = 30.0) -> bool:
    """Stop a mariadbd left running on `config`'s data directory by a killed server. Returns True if one was
    stopped. Processes that are not a mariadbd on this data directory are never touched."""
    try:
        pid = int(config.pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    if not _process_alive(pid) or not _is_our_mariadbd(pid, config):
        return False
    log_event(log, logging.WARNING, "stopping stale embedded mariadbd", pid=pid, datadir=str(config.datadir))
    os.kill(pid, signal.SIGTERM)
    with trio.move_on_after(timeout):
        while _process_alive(pid) and _is_our_mariadbd(pid, config):
            await trio.sleep(0.1)
        return True
    log_event(log, logging.WARNING, "stale mariadbd ignored SIGTERM, killing", pid=pid)
    os.kill(pid, signal.SIGKILL)
    while _process_alive(pid) and _is_our_mariadbd(pid, config):
        await trio.sleep(0.05)
    return True


async def start_embedded(nursery: trio.Nursery, datadir: str | Path, database: str) -> ConnectParams:
    """Start (and supervise in `nursery`) the private MariaDB under `datadir`, create `database` if missing.

    Returns the connection parameters. Raises EmbeddedDatabaseError when mariadb-server is missing or the
    server does not come up (the message carries the tail of its error log).
    """
    config = _mariadb_config(Path(datadir))
    await stop_stale_server(config)
    log_event(log, logging.INFO, "starting embedded mariadb", datadir=str(config.datadir))
    try:
        params = await nursery.start(supervise_mariadb, config)
    except MariaDBError as exc:
        raise EmbeddedDatabaseError(str(exc)) from exc
    admin = await Connection.open(ConnectParams(database="", user=params.user, unix_socket=params.unix_socket))
    try:
        await admin.execute(f"CREATE DATABASE IF NOT EXISTS {quote_identifier(database)}", privilege="CREATE")
    finally:
        await admin.aclose()
    log_event(log, logging.INFO, "embedded mariadb ready", socket=params.unix_socket, database=database)
    return ConnectParams(database=database, user=params.user, unix_socket=params.unix_socket)
