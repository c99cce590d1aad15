"""Async MariaDB sessions over trio-mysql, and a small pool of them.

trio-mysql 1.0.3 under trio 0.35 works when used as follows (each point is a bug we step around):

* `use_unicode` defaults to None, which skips decoding but still runs the value converters on bytes
  (DECIMAL then raises TypeError). We pass `use_unicode=False` and no decoders: every value arrives as the
  server's text bytes, exactly what the query channel forwards, and we convert the few we need ourselves.
* SQL warnings are raised through `warnings.warn` after every statement (an error under
  `filterwarnings=error`, and noise anyway: `INSERT IGNORE` and `DROP ... IF EXISTS` warn by design).
  Our cursor class defers warnings, which switches that off.
* A new command after a multi-result statement (CALL) calls an un-awaited `next_result()` in a loop
  (hangs). We always drain every result set before returning.
* Its internal close (also run when a read fails) calls `close()` on a trio.SocketStream, which has
  none; the error is swallowed and the socket leaks (ResourceWarning). Our subclass closes the stream's
  socket instead.
* It has no call for COM_SET_OPTION, and its OK-packet reader rejects the EOF packet that command answers
  with. `Connection.set_multi_statements` sends the command and reads the reply itself.

Multi-statement mode (several `;`-separated statements in one COM_QUERY, one round trip) is off by default and
switched on per session only by the store path (`Pool.connection(multi_statements=True)`), so SQL from other
callers, e.g. the query channel, keeps single-statement semantics.
"""

from __future__ import annotations

import logging
import re
import struct
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
import trio_mysql
import trio_mysql.cursors
from trio_mysql import err as mysql_err
from trio_mysql.constants import COMMAND

from .errors import (
    ER_ACCESS_DENIED,
    ER_COLUMNACCESS_DENIED,
    ER_DBACCESS_DENIED,
    ER_PROCACCESS_DENIED,
    ER_SPECIFIC_ACCESS_DENIED,
    ER_TABLEACCESS_DENIED,
    LOST_CONNECTION_CODES,
    ConnectionLostError,
    DatabaseError,
    PrivilegeError,
    SqlError,
)

__all__ = ["BatchResult", "ConnectParams", "Connection", "Pool", "ResultSet", "quote_identifier", "quote_literal"]

log = logging.getLogger(__name__)

PRIVILEGE_ERRORS = frozenset(
    {ER_DBACCESS_DENIED, ER_ACCESS_DENIED, ER_TABLEACCESS_DENIED, ER_COLUMNACCESS_DENIED,
     ER_PROCACCESS_DENIED, ER_SPECIFIC_ACCESS_DENIED}
)

# COM_SET_OPTION arguments (MySQL client/server protocol).
_MULTI_STATEMENTS_ON = 0
_MULTI_STATEMENTS_OFF = 1

# Session settings of the reference central (sql_db.cpp, SqlDb_mysql::connect): an empty sql_mode makes
# the sensors' quoted numbers and over-long strings land the same way they do there.
SESSION_SETUP = ("SET sql_mode = ''", "SET group_concat_max_len = 100000000")


@dataclass(frozen=True, slots=True)
class ConnectParams:
    """Where the central's database is. `unix_socket` wins over host/port when set."""

    database: str
    user: str
    password: str = field(default="", repr=False)
    unix_socket: str | None = None
    host: str = "127.0.0.1"
    port: int = 3306
    connect_timeout: float = 10.0


@dataclass(slots=True)
class ResultSet:
    """One statement's outcome. `columns` are (name, MySQL C-API field type) pairs, empty when the
    statement returns no rows; `rows` hold each value as the server's text bytes or None (SQL NULL)."""

    columns: tuple[tuple[str, int], ...] = ()
    rows: list[tuple[bytes | None, ...]] = field(default_factory=list)
    affected_rows: int = 0
    insert_id: int = 0


@dataclass(slots=True)
class BatchResult:
    """Outcome of a multi-statement batch: the result sets read in order and, when a statement failed, its
    error (the server runs no statement after a failed one). One statement gives one result set, except a
    compound statement or CALL, which also returns the result sets of the SELECTs it ran."""

    results: list[ResultSet]
    error: SqlError | PrivilegeError | None = None


def quote_identifier(name: str) -> str:
    """Return `name` as a backquoted identifier. Raises ValueError for names no schema of ours uses."""
    if not name or "\x00" in name or len(name) > 64:
        raise ValueError(f"bad SQL identifier {name!r}")
    return "`" + name.replace("`", "``") + "`"


def quote_literal(value: str | bytes) -> str:
    """Return `value` as a single-quoted SQL string literal (backslash and quote escaped, sql_mode '')."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "surrogateescape")
    out = value.replace("\\", "\\\\").replace("'", "\\'").replace("\x00", "\\0")
    out = out.replace("\n", "\\n").replace("\r", "\\r").replace("\x1a", "\\Z")
    return "'" + out + "'"


class _QuietCursor(trio_mysql.cursors.Cursor):
    # See the module docstring: no warnings.warn per statement.
    _defer_warnings = True


_DENIED_CMD = re.compile(r"^(?P<cmd>[A-Za-z ]+?) command denied to user", re.I)
# "... to database 'db'" (1044) or "... for table `db`.`t`" (1142): the server knows best where.
_DENIED_DB = re.compile(r"to database '([^']*)'|for table `([^`]*)`\.", re.I)


def translate_error(exc: BaseException, *, user: str, database: str, privilege: str | None = None) -> DatabaseError:
    """Map a trio-mysql/socket exception to the database layer's own error.

    `privilege` names what the statement needed (e.g. "CREATE ROUTINE"); it is used when the server's
    message does not name one (error 1044 just says "access denied ... to database").
    """
    if isinstance(exc, DatabaseError):
        return exc
    if isinstance(exc, mysql_err.MySQLError):
        args = exc.args
        errno = args[0] if args and isinstance(args[0], int) else 0
        message = str(args[1]) if len(args) > 1 else str(exc)
        if errno in LOST_CONNECTION_CODES or isinstance(exc, mysql_err.InterfaceError):
            return ConnectionLostError(f"lost connection to the database: {message}", errno or 2013)
        if errno in PRIVILEGE_ERRORS:
            m = _DENIED_CMD.match(message)
            named = m.group("cmd").upper() if m else None
            where = _DENIED_DB.search(message)
            database = (where.group(1) or where.group(2)) if where else database or "(none)"
            return PrivilegeError(privilege or named or "required", user, database, message, errno)
        return SqlError(message, errno)
    if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError, EOFError)):
        return ConnectionLostError(f"lost connection to the database: {exc!r}", 2013)
    raise TypeError(f"not a database error: {exc!r}") from exc


class Connection:
    """One database session. Not safe for concurrent use: one task at a time (the Pool ensures that).

    After a ConnectionLostError the session is `broken` and must be discarded.
    """

    def __init__(self, params: ConnectParams) -> None:
        self.params = params
        self.broken = False
        self.multi_statements = False
        self._conn: trio_mysql.connections.Connection | None = None
        self._variables: dict[str, bytes | None] = {}

    @classmethod
    async def open(cls, params: ConnectParams) -> Connection:
        """Connect, authenticate, select the database and apply the session settings.

        Raises ConnectionLostError when the server cannot be reached, PrivilegeError when the account may
        not log in or use the database, SqlError for anything else the server refuses.
        """
        self = cls(params)
        conn = _MySQLConnection(
            user=params.user, password=params.password, unix_socket=params.unix_socket,
            host=params.host, port=params.port, database=params.database or None,
            charset="utf8mb4", use_unicode=False, conv={}, autocommit=True,
            cursorclass=_QuietCursor, connect_timeout=params.connect_timeout,
        )
        try:
            with trio.fail_after(params.connect_timeout):
                await conn.connect()
        except trio.TooSlowError:
            _hard_close(conn)
            raise ConnectionLostError(f"database connect timed out after {params.connect_timeout}s") from None
        except BaseException as exc:
            _hard_close(conn)
            if isinstance(exc, (mysql_err.MySQLError, OSError)):
                raise translate_error(exc, user=params.user, database=params.database, privilege="USAGE") from exc
            raise
        self._conn = conn
        for sql in SESSION_SETUP:
            await self.execute(sql)
        return self

    async def execute_all(self, sql: str | bytes, *, privilege: str | None = None) -> list[ResultSet]:
        """Run `sql` (one statement, or a CALL producing several result sets) and return every result set.

        `privilege` names what the statement needs, for the error message if it is missing.
        Raises SqlError, PrivilegeError or ConnectionLostError (then the session is broken).
        """
        if isinstance(sql, str):
            sql = sql.encode("utf-8", "surrogateescape")
        results, error = await self._run(sql, privilege)
        if error is not None:
            raise error
        return results

    async def _run(self, sql: bytes, privilege: str | None) -> tuple[list[ResultSet], SqlError | PrivilegeError | None]:
        """Send `sql` and read every result set. A statement the server refused comes back as the error (the
        protocol drained, the session usable); a lost session raises ConnectionLostError (session broken)."""
        if self._conn is None or self.broken:
            raise ConnectionLostError("connection is closed")
        cursor = self._conn.cursor()
        results: list[ResultSet] = []
        try:
            await cursor.execute(sql)
            while True:
                results.append(await _result_of(cursor))
                if not await cursor.nextset():
                    break
        except trio.Cancelled:
            # A statement abandoned half-way leaves the protocol mid-result: the session is unusable.
            self._break()
            raise
        except (mysql_err.MySQLError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = translate_error(exc, user=self.params.user, database=self.params.database,
                                    privilege=privilege)
            if isinstance(error, ConnectionLostError):
                self._break()
                raise error from exc
            # The server stops at the failed statement, but the error packet may still say more results follow.
            await self._drain(cursor)
            if self.broken:
                raise ConnectionLostError("session unusable after a failed statement", 2013) from exc
            assert isinstance(error, SqlError | PrivilegeError)
            error.__cause__ = exc
            return results, error
        return results, None

    async def execute(self, sql: str | bytes, *, privilege: str | None = None) -> ResultSet:
        """Run one statement and return its (last) result set. Errors as for execute_all."""
        return (await self.execute_all(sql, privilege=privilege))[-1]

    async def execute_batch(self, sql: bytes) -> BatchResult:
        """Run `;`-separated statements in one round trip (the session must be in multi-statement mode).

        Returns every result set read; a statement the server refused ends the batch and is returned as
        `error` (SqlError or PrivilegeError) instead of raised, so the caller can tell from the number of
        results which statement failed. Raises ConnectionLostError (the session is then broken) and
        ValueError when multi-statement mode is off.
        """
        if not self.multi_statements:
            raise ValueError("execute_batch needs multi-statement mode (set_multi_statements(True))")
        results, error = await self._run(sql, None)
        return BatchResult(results, error)

    async def set_multi_statements(self, on: bool) -> None:
        """Switch multi-statement mode of this session (COM_SET_OPTION); no round trip when already so.

        Raises ConnectionLostError (session broken) or SqlError when the server refuses.
        """
        if on == self.multi_statements:
            return
        if self._conn is None or self.broken:
            raise ConnectionLostError("connection is closed")
        conn = self._conn
        option = _MULTI_STATEMENTS_ON if on else _MULTI_STATEMENTS_OFF
        try:
            await conn._execute_command(COMMAND.COM_SET_OPTION, struct.pack("<H", option))
            # The server answers with an EOF packet (an error packet is raised by _read_packet).
            packet = await conn._read_packet()
            if not (packet.is_eof_packet() or packet.is_ok_packet()):
                self._break()
                raise ConnectionLostError("unexpected reply to COM_SET_OPTION", 2013)
        except trio.Cancelled:
            self._break()
            raise
        except (mysql_err.MySQLError, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            error = translate_error(exc, user=self.params.user, database=self.params.database)
            if isinstance(error, ConnectionLostError):
                self._break()
            raise error from exc
        self.multi_statements = on

    async def variable(self, name: str) -> bytes | None:
        """The value of the server variable `@@name` as text bytes (None for NULL), read once per session.

        Raises ValueError for a name that is not a plain identifier, errors as for execute.
        """
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad server variable name {name!r}")
        if name not in self._variables:
            self._variables[name] = (await self.execute(f"SELECT @@{name}")).rows[0][0]
        return self._variables[name]

    async def _drain(self, cursor: trio_mysql.cursors.Cursor) -> None:
        # After a server error in a multi-statement result the remaining sets must still be consumed.
        try:
            while await cursor.nextset():
                pass
        except Exception:  # noqa: BLE001 - any failure here means the session is unusable
            self._break()

    def _break(self) -> None:
        self.broken = True
        if self._conn is not None:
            _hard_close(self._conn)

    async def ping(self) -> None:
        """Check the session is alive. Raises ConnectionLostError (and breaks the session) when not."""
        await self.execute("SELECT 1")

    async def aclose(self) -> None:
        """Say goodbye to the server (best effort) and close the socket."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with trio.move_on_after(1) as scope:
                scope.shield = True
                await conn.aclose()
            _hard_close(conn)


def _hard_close(conn: trio_mysql.connections.Connection) -> None:
    """Close the session's socket without I/O."""
    conn._force_close()


class _MySQLConnection(trio_mysql.connections.Connection):
    """trio-mysql's connection with a socket close that works on a trio.SocketStream."""

    def _force_close(self) -> None:
        stream, self._sock = self._sock, None
        self._closed = True
        inner = getattr(stream, "socket", stream)
        if inner is not None:
            try:
                inner.close()
            except OSError:
                pass

    __del__ = _force_close


async def _result_of(cursor: trio_mysql.cursors.Cursor) -> ResultSet:
    description = cursor.description or ()
    rows = list(await cursor.fetchall()) if description else []
    return ResultSet(
        columns=tuple((d[0], d[1]) for d in description),
        rows=rows,
        affected_rows=max(cursor.rowcount, 0),
        insert_id=cursor.lastrowid or 0,
    )


class Pool:
    """A bounded pool of sessions. Sessions are opened lazily and re-opened after a lost connection.

    `async with pool.connection() as conn:` waits while `size` sessions are in use. A session that broke
    (lost connection) is dropped at the end of the block; one left inside a transaction by an exception is
    rolled back, or dropped if even that fails.
    """

    def __init__(self, params: ConnectParams, size: int = 4) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.params = params
        self.size = size
        self._limit = trio.Semaphore(size)
        self._idle: list[Connection] = []
        self._closed = False

    @asynccontextmanager
    async def connection(self, *, multi_statements: bool = False) -> AsyncIterator[Connection]:
        """Lend one session, in multi-statement mode or not as asked (an idle session already in that mode is
        preferred; another one is switched). Raises ConnectionLostError / PrivilegeError when a new one cannot
        be opened.
        """
        if self._closed:
            raise ConnectionLostError("database pool is closed")
        async with self._limit:
            conn = self._take_idle(multi_statements)
            if conn is None:
                conn = await Connection.open(self.params)
            ok = False
            try:
                await conn.set_multi_statements(multi_statements)
                yield conn
                ok = True
            finally:
                if not ok and not conn.broken:
                    await _rollback_or_break(conn)
                if conn.broken or self._closed:
                    with trio.CancelScope(shield=True):
                        await conn.aclose()
                else:
                    self._idle.append(conn)

    def _take_idle(self, multi_statements: bool) -> Connection | None:
        for i in range(len(self._idle) - 1, -1, -1):
            if self._idle[i].multi_statements == multi_statements:
                return self._idle.pop(i)
        return self._idle.pop() if self._idle else None

    async def run(self, sql: str | bytes, *, privilege: str | None = None, retries: int = 1) -> ResultSet:
        """Run one statement on a pooled session, retrying once on a lost connection (read-only or
        idempotent statements only: the caller decides by passing `retries`)."""
        for attempt in range(retries + 1):
            try:
                async with self.connection() as conn:
                    return await conn.execute(sql, privilege=privilege)
            except ConnectionLostError:
                if attempt == retries:
                    raise
                log.warning("db: connection lost, reconnecting (attempt %d)", attempt + 1)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close idle sessions; sessions in use are closed when returned."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()


async def _rollback_or_break(conn: Connection) -> None:
    # The block failed, perhaps inside a transaction: roll back so the next borrower starts clean. A
    # rollback that fails or hangs leaves the session in an unknown state, so it is dropped instead.
    with trio.CancelScope(shield=True):
        with trio.move_on_after(5) as scope:
            try:
                await conn.execute("ROLLBACK")
            except DatabaseError:
                conn._break()
        if scope.cancelled_caught:
            conn._break()


def columns_of(result: ResultSet) -> Sequence[str]:
    """Return the column names of `result`."""
    return [name for name, _ in result.columns]
