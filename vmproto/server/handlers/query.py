"""`query` connections (spec §10): run the sensor's SQL on the central database, answer JSON or CSV."""

from __future__ import annotations

import logging

from vmproto.logs import log_event
from vmproto.server.db.errors import DatabaseError
from vmproto.server.db.query import run_query
from vmproto.server.handlers.context import ServerContext
from vmproto.server.handlers.handshake import run_handshake
from vmproto.server.handlers.io import MachineStream, PeerGone, Shutdown
from vmproto.wire import events as ev
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.query_result import QueryError, encode_csv_result, encode_error, encode_json_result

__all__ = ["handle_query", "execute_request"]

log = logging.getLogger("vmproto.server")

# MySQL client error 2006: what a sensor sees when the central has no database session to offer.
_CR_SERVER_GONE = 2006


async def handle_query(ctx: ServerContext, io: MachineStream, rsa_key: object, opened_ts: float) -> None:
    """Run one query connection to its end (`_END_`, EOF, 60 s idle or shutdown)."""
    creds = await run_handshake(io, rsa_key, opened_ts)
    if not isinstance(creds, ev.Credentials):
        return
    await io.send(ev.HandshakeOK())
    try:
        while True:
            item = await io.next_event()
            if isinstance(item, ev.QueryRequest):
                ctx.stats.blocks_in["query"] += 1
                await io.send(await execute_request(ctx, item))
            elif isinstance(item, ev.Rejected):
                continue  # empty request: the reference answers nothing and keeps the connection
            elif isinstance(item, ev.End | ev.ConnectionClosed | Shutdown):
                return
    except RemoteProtocolError as exc:
        ctx.log_hostile(io.peer[0], "query connection error", port=io.peer[1], reason=exc.reason)
    except PeerGone:
        pass


async def execute_request(ctx: ServerContext, request: ev.QueryRequest) -> ev.QueryResponse:
    """Execute one request once and return the reply event (rows, or the error in the reference format)."""
    log.debug("query: %s", request.sql[:200])
    if ctx.pool is None or not ctx.db_ready:
        return ev.QueryResponse(encode_error(_CR_SERVER_GONE, "MySQL server has gone away"), error=True)
    try:
        async with ctx.pool.connection() as conn:
            result = await run_query(conn, request.sql)
    except DatabaseError as exc:  # no session could be opened
        ctx.stats.count_db_error(exc)
        log_event(log, logging.ERROR, "query: no database session", error=exc.message)
        return ev.QueryResponse(encode_error(exc.errno or _CR_SERVER_GONE, exc.message), error=True)
    if isinstance(result, QueryError):
        return ev.QueryResponse(encode_error(result.code, result.message), error=True)
    if request.csv:
        return ev.QueryResponse(encode_csv_result(result.columns, result.rows))
    return ev.QueryResponse(encode_json_result(result.columns, result.rows))
