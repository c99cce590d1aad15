"""`store` connection machines (spec §8, facts §4.6): SQL store messages over AES blocks.

Client: after the handshake (`StoreAccepted` tells whether the server wants `check` / `T<time>|`),
`send(StoreQueries(StoreMessage(...)))` → the message text, compressed with the constructor's codec (the service
handshake's `store_compression`), one AES block → receive `StoreOK` or `StoreError` (queue full: `usleep`,
`keep_connect`; `next_attempt` false: drop the message). `send(StoreCheck())` asks whether the queue has room.

Server: each received message is one `StoreQueries` event with the decoded queries; the caller answers later with
`StoreOK()` (vmproto acks once the message is safely queued or committed — its choice) or
`StoreError("sql queue is full", usleep=...)` (the reference's queue-full JSON; the message is then discarded).
A message whose client time is more than 24 h ahead of `now` raises RemoteProtocolError carrying the reference's
`client time is too greater than server time` JSON as an AES reply, then close. A message that is empty, cannot be
decompressed, or breaks the grammar of spec §8.3 (no `|`, bad id, bad time part, bad `L<len>:` item) raises
`store_msg.BadStoreMessage` (a RemoteProtocolError without reply): nothing of it is applied and the connection
closes (spec §8.5 steps 3-4, §8.6, §8.13). The reference would apply the items before a defect and answer `OK`.
"""

from __future__ import annotations

from typing import Any

from vmproto.wire import events as ev
from vmproto.wire import vmjson
from vmproto.wire.compression import Compression, compress, decompress
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.framing import encode_block
from vmproto.wire.handshake import HandshakeClient, HandshakeServer, parse_wire_time
from vmproto.wire.store_msg import (
    CHECK,
    CLIENT_TIME_TOO_GREAT_REPLY,
    OK,
    STORE_CONNECT_REPLY,
    decode_store_message,
    encode_store_message,
)

__all__ = ["StoreClient", "StoreServer", "CLIENT_TIME_LIMIT_S"]

CLIENT_TIME_LIMIT_S = 24 * 60 * 60
CLIENT_TIME_TOO_GREAT = "client time is too greater than server time"


def _flag(fields: dict[str, Any], key: str, default: bool) -> bool:
    return default if key not in fields else vmjson.atoi(fields[key]) > 0


class StoreClient(HandshakeClient):
    """Sensor side of a `store` connection. `compression` is the store codec (default gzip).

    After the handshake `check_store` / `check_time` hold what the server announced.
    """

    connection_type = "store"

    def __init__(self, *, compression: int = Compression.GZIP, **caps: Any) -> None:
        super().__init__(**caps)
        self._compression = Compression(compression)
        self.check_store = False
        self.check_time = False

    def _handshake_reply(self, payload: bytes) -> ev.Event:
        if payload == OK:
            return ev.StoreAccepted(False, False)
        if payload[:1] == b"{":
            try:
                fields = vmjson.loads(payload)
            except RemoteProtocolError:
                fields = None
            if isinstance(fields, dict) and vmjson.text_value(fields.get("rslt")) == "OK":
                self.check_store = vmjson.atoi(fields.get("check_store")) > 0
                self.check_time = vmjson.atoi(fields.get("check_time")) > 0
                return ev.StoreAccepted(self.check_store, self.check_time)
        # The reference logs "failed response from server - <text>" and reconnects.
        return ev.Refuse(payload.decode("utf-8", "replace") or "(empty reply)")

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        if payload == OK:
            return [ev.StoreOK()]
        if payload[:1] == b"{":
            fields = vmjson.loads(payload)
            if isinstance(fields, dict):
                usleep = vmjson.atoi(fields["usleep"]) if "usleep" in fields else None
                return [ev.StoreError(
                    vmjson.text_value(fields.get("error")),
                    next_attempt=_flag(fields, "next_attempt", True),
                    usleep=usleep if usleep is None or usleep >= 0 else 0,
                    quietly=_flag(fields, "quietly", False),
                    keep_connect=_flag(fields, "keep_connect", False),
                )]
        # Any other text: the reference logs it and retries.
        return [ev.StoreError(payload.decode("utf-8", "replace"))]

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.StoreQueries):
            return self._aes_block(compress(self._compression, encode_store_message(event.message)))
        if isinstance(event, ev.StoreCheck):
            return self._aes_block(CHECK)
        return super()._encode_data(event)


class StoreServer(HandshakeServer):
    """Central side of a `store` connection.

    `utc_offset`: seconds east of UTC of the server's local time, used to read the sensor's `T<time>|`.
    """

    connection_type = "store"

    def __init__(self, *, utc_offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._utc_offset = utc_offset

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        if payload == CHECK:
            return [ev.StoreCheck()]
        _kind, text = decompress(payload, max_size=self._max_decompressed)
        message = decode_store_message(text)  # a malformed message raises: no reply, close (spec §8.6)
        if message.client_time is not None:
            self._check_client_time(message.client_time)
        return [ev.StoreQueries(message)]

    def _check_client_time(self, client_time: str) -> None:
        sent = parse_wire_time(client_time, self._utc_offset)
        if sent is None:
            return  # the reference's parser yields a time that never trips the check
        now = self._require_now("the store client-time check")
        if sent > now and sent - now > CLIENT_TIME_LIMIT_S:
            raise RemoteProtocolError(CLIENT_TIME_TOO_GREAT, reply=CLIENT_TIME_TOO_GREAT_REPLY, reply_mode="aes")

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.StoreAccepted):
            if event.check_store and event.check_time:
                return encode_block(STORE_CONNECT_REPLY)
            if not event.check_store and not event.check_time:
                return encode_block(OK)  # server_cp_store_simple_connect_response
            return encode_block(vmjson.dumps({"rslt": "OK", "check_store": int(event.check_store),
                                              "check_time": int(event.check_time)}))
        if isinstance(event, ev.StoreOK):
            return self._aes_block(OK)
        if isinstance(event, ev.StoreError):
            if not event.next_attempt:
                raise LocalProtocolError("next_attempt=0 errors are the client-time refusal, raised by the machine")
            fields: dict[str, Any] = {"error": event.error, "next_attempt": True}
            if event.usleep is not None:
                fields["usleep"] = event.usleep
            if event.quietly:
                fields["quietly"] = True
            if event.keep_connect:
                fields["keep_connect"] = True
            return self._aes_block(vmjson.dumps(fields))
        return super()._encode_data(event)
