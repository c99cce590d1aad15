"""Remote `query` execution (spec §10): run a sensor's SQL once on the central database and return the
columns with their MySQL C-API field types and the rows as text bytes, or the error, ready for
vmproto.wire.query_result's encoders.
"""

from __future__ import annotations

import logging
import re

from vmproto.wire.query_result import QueryError, QueryResult

from .connection import Connection, quote_identifier
from .errors import ER_PARSE_ERROR, ER_SP_ALREADY_EXISTS, DatabaseError

__all__ = ["run_query"]

log = logging.getLogger(__name__)

_CREATE_PROCEDURE = re.compile(rb"^\s*create\s+procedure\s+`?([A-Za-z0-9_$]+)`?\s*\(", re.I)


async def run_query(conn: Connection, sql: bytes) -> QueryResult | QueryError:
    """Execute `sql` (one attempt) and return its rows or its error; never raises a database error.

    Rows come from the first result set that has columns (a CALL may produce several; the reference
    reads one). A statement without a result set gives a QueryResult with no columns and no rows.
    A failed `create procedure NAME(` that says the procedure already exists is followed, as in the
    reference, by `repair table mysql.proc` (when that table exists) and `drop procedure if exists
    NAME`, so the sensor's next attempt succeeds; the reply is still the error. A lost connection is
    reported as that error (2006/2013) and leaves `conn` broken.
    """
    try:
        results = await conn.execute_all(sql)
    except DatabaseError as exc:
        if exc.errno == ER_SP_ALREADY_EXISTS:
            await _clear_existing_procedure(conn, sql)
        retry = 0 if exc.errno == ER_PARSE_ERROR else 1
        return QueryError(code=exc.errno, retry=retry, message=exc.message)
    for result in results:
        if result.columns:
            return QueryResult(columns=result.columns, rows=tuple(result.rows))
    return QueryResult(columns=(), rows=())


async def _clear_existing_procedure(conn: Connection, sql: bytes) -> None:
    m = _CREATE_PROCEDURE.match(sql)
    if m is None or conn.broken:
        return
    name = m.group(1).decode("ascii")
    try:
        found = await conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'mysql' AND table_name = 'proc'"
        )
        if found.rows:
            await conn.execute("REPAIR TABLE mysql.proc")
        await conn.execute(f"DROP PROCEDURE IF EXISTS {quote_identifier(name)}")
        log.info("query: procedure %s already existed; repaired mysql.proc and dropped it", name)
    except DatabaseError as exc:
        log.warning("query: could not clear existing procedure %s: %s", name, exc)
