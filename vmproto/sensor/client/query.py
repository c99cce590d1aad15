"""The query client, used only where the sensor needs the central's database (spec §10): the start-up read of its
`sensor_config` row when `mysqlloadconfig` is on, done as the reference does its first query — its own `query`
connection, one request, `_END_` (never compressed), close. Requests are gzip until the service handshake confirmed
a codec, and always gzip on a packetbuffer sensor (README item 4; `SessionState.query_compression`)."""

from __future__ import annotations

import logging

from vmproto.logs import log_event
from vmproto.sensor.client.connector import Connector, open_channel
from vmproto.sensor.client.errors import ChannelLost, ClientError
from vmproto.sensor.client.session import SessionState
from vmproto.wire import events as ev
from vmproto.wire._state import State
from vmproto.wire.crypto import generate_aes_strings
from vmproto.wire.errors import RemoteProtocolError
from vmproto.wire.query import QueryClient as QueryMachine
from vmproto.wire.query_result import QueryError, QueryResult

__all__ = ["run_query", "load_sensor_config", "sensor_config_sql"]

log = logging.getLogger("vmproto.sensor.client.query")


def sensor_config_sql(id_sensor: int) -> bytes:
    """The reference's start-up query text for this sensor's configuration row."""
    where = f"= {id_sensor}" if id_sensor > 0 else "IS NULL"
    return f"SELECT * FROM sensor_config WHERE id_sensor {where}".encode("ascii")


async def run_query(connector: Connector, session: SessionState, sql: bytes) -> QueryResult:
    """One request on a fresh `query` connection, then `_END_`. Returns the rows.

    Raises ClientError (ConnectFailed, HandshakeRefused, ChannelLost, or the central's SQL error text).
    """
    ckey, ivec = generate_aes_strings()
    machine = QueryMachine(compression=session.query_compression)
    ms, _ok, _conn = await open_channel(connector, machine, ev.Credentials(session.identity.password, ckey, ivec),
                                        ev.HandshakeOK)
    machine.set_timeout(State.REPLY, connector.timings.reply_timeout)
    try:
        await ms.send(ev.QueryRequest(sql))
        reply = await ms.expect(ev.QueryResponse)
        try:
            result = reply.decode()
        except RemoteProtocolError as exc:
            raise ChannelLost(f"unreadable query reply: {exc}") from None
        await ms.send(ev.End())
    finally:
        await ms.aclose()
    if isinstance(result, QueryError):
        raise ClientError(f"query failed: {result.code} {result.message}")
    return result


async def load_sensor_config(connector: Connector, session: SessionState) -> dict[str, str]:
    """Read this sensor's `sensor_config` row (one attempt, like the reference). Returns column → value for the
    non-NULL columns other than `id` and `id_sensor`; {} when there is no row. Raises ClientError on failure."""
    result = await run_query(connector, session, sensor_config_sql(session.identity.id_sensor))
    if not result.rows:
        return {}
    row = result.rows[0]
    out = {}
    for (name, _type), value in zip(result.columns, row, strict=False):
        if name in ("id", "id_sensor") or value is None:
            continue
        out[name] = value.decode("utf-8", "replace")
    log_event(log, logging.INFO, "sensor_config loaded from the central", options=len(out))
    return out
