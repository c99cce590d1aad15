"""`query` connection machines (spec §10, facts §4.5): remote SQL over AES blocks after the generic handshake.

Client: `send(QueryRequest(sql, csv=...))` → compressed with the codec given to the constructor (gzip until the
service handshake confirmed another; packetbuffer sensors keep gzip) → receive `QueryResponse`. `send(End())`
writes `_END_` uncompressed (as the reference does) and closes.

Server: receives `QueryRequest` (decompressed; `compression` = the codec the request used), answers
`QueryResponse(payload)`, compressed with that same codec unless `error=True` (the reference writes error replies
uncompressed). A request that decompresses to nothing raises RemoteProtocolError `empty query` (no reply, close:
spec §10.2, §5.8, §10.11; the reference answers nothing and keeps the connection). 60 s idle → closed.
"""

from __future__ import annotations

from typing import Any

from vmproto.wire import events as ev
from vmproto.wire.compression import Compression, compress, decompress
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.handshake import HandshakeClient, HandshakeServer
from vmproto.wire.query_result import END

__all__ = ["QueryClient", "QueryServer", "EMPTY_QUERY"]

EMPTY_QUERY = "empty query"

_CSV = b"CSV:"


class QueryClient(HandshakeClient):
    """Sensor side of a `query` connection. `compression` is the request codec (default gzip)."""

    connection_type = "query"

    def __init__(self, *, compression: int = Compression.GZIP, **caps: Any) -> None:
        super().__init__(**caps)
        self._compression = Compression(compression)

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        _kind, text = decompress(payload, max_size=self._max_decompressed)
        return [ev.QueryResponse(text)]

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.QueryRequest):
            if not event.sql:
                # The reference server never answers an empty request; refuse to send one.
                raise LocalProtocolError("an empty query gets no reply")
            text = (_CSV + event.sql) if event.csv else event.sql
            return self._aes_block(compress(self._compression, text))
        if isinstance(event, ev.End):
            return self._aes_block(END)
        return super()._encode_data(event)


class QueryServer(HandshakeServer):
    """Central side of a `query` connection."""

    connection_type = "query"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._reply_compression = Compression.NONE

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        kind, text = decompress(payload, max_size=self._max_decompressed)
        if text == END:
            return [ev.End()]
        if not text:
            raise RemoteProtocolError(EMPTY_QUERY)  # no reply, close (spec §10.2)
        self._reply_compression = kind
        csv = text.startswith(_CSV)
        return [ev.QueryRequest(text[len(_CSV):] if csv else text, csv, int(kind))]

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.QueryResponse):
            if event.error:
                return self._aes_block(event.payload)
            return self._aes_block(compress(self._reply_compression, event.payload))
        return super()._encode_data(event)
