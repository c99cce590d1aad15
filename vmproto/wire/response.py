"""`response` and `responses` connection machines (spec §11, facts §4.3/§4.4).

response — one-shot, no handshake. Client (sensor): send OpenConnection(fields={"gui_task_id": id}), then
ResponseData chunks written as one AES-128-CBC stream with the *service* connection's key strings, then
ResponseEnd (final padded block; nothing at all if no byte was written) and close. Server: receives the opening
(the bytes after it, with the reference's CR/LF skipping, start the stream), waits for the caller to look the task
up and `send(ResponseKeys(aes_ckey, aes_ivec))` (or `send(ConnectionClosed())` for an unknown task: the reference
closes silently), then yields ResponseData and, at EOF, ResponseEnd. The copy is capped at 300 s.

`skip_remainder_crlf` (server, default True) reproduces the reference quirk: CR/LF bytes right after the opening
line are skipped even when they are the stream's first ciphertext bytes (facts §1.2 item 6). With False the stream
starts right after the CRLF terminator, which is what a sender means; it needs the machine to read the opening
line itself (an Acceptor-provided Opening only carries the skipped remainder).

responses — long-lived, generic handshake. Client: ResponseItem(task_id, output) as `<task_id>#<output>` →
ResponseReply. Server: ResponseItem, or Rejected("missing gui task id") when there is no `#` (searched like the
reference: before the last byte and before any NUL); the caller answers ResponseReply("OK") or
ResponseReply("unknown gui task id").
"""

from __future__ import annotations

from typing import Any

from vmproto.wire import events as ev
from vmproto.wire._state import Role, State
from vmproto.wire.connection import Connection
from vmproto.wire.crypto import AesStreamDecryptor, AesStreamEncryptor, key_string_bytes
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.handshake import HandshakeClient, HandshakeServer
from vmproto.wire.opening import Opening, OpeningReader, encode_opening

__all__ = ["ResponseClient", "ResponseServer", "ResponsesClient", "ResponsesServer", "MISSING_TASK_ID",
           "UNKNOWN_TASK_ID"]

MISSING_TASK_ID = "missing gui task id"
UNKNOWN_TASK_ID = "unknown gui task id"


def _key_bytes(aes_ckey: str, aes_ivec: str) -> tuple[bytes, bytes]:
    # The key strings come from our caller (the service connection's credentials): unusable ones are a local
    # error here, even when the sensor sent them that way.
    try:
        key, iv = key_string_bytes(aes_ckey, "aes_ckey"), key_string_bytes(aes_ivec, "aes_ivec")
    except RemoteProtocolError as exc:
        raise LocalProtocolError(exc.reason) from None
    if len(key) < 16 or len(iv) < 16:
        raise LocalProtocolError("aes key or iv shorter than 16 bytes")
    return key[:16], iv[:16]


class ResponseClient(Connection):
    """Sensor side of `response`: `aes_ckey`/`aes_ivec` are the service connection's key strings."""

    connection_type = "response"
    role = Role.CLIENT

    def __init__(self, *, aes_ckey: str, aes_ivec: str, **caps: Any) -> None:
        super().__init__(**caps)
        key, iv = _key_bytes(aes_ckey, aes_ivec)
        self._encryptor = AesStreamEncryptor(key, iv)

    def _parse(self) -> None:  # pragma: no cover - the client never expects input
        return

    def _feed(self, data: bytes) -> None:
        # The reference server never writes on a response connection; ignore anything that comes.
        return

    def _encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.OpenConnection):
            if event.type_connection != self.connection_type or "gui_task_id" not in event.fields:
                raise LocalProtocolError("a response opening needs type_connection 'response' and gui_task_id")
            return encode_opening({"type_connection": event.type_connection, **event.fields})
        if isinstance(event, ev.ResponseData):
            return self._encryptor.update(event.data)
        if isinstance(event, ev.ResponseEnd):
            return self._encryptor.finalize()
        return super()._encode(event)


class ResponseServer(Connection):
    """Central side of `response`."""

    connection_type = "response"
    role = Role.SERVER

    def __init__(self, *, opening: Opening | None = None, skip_remainder_crlf: bool = True, **caps: Any) -> None:
        super().__init__(**caps)
        self._skip_crlf = skip_remainder_crlf
        self._reader: OpeningReader | None = OpeningReader(max_size=self._opening_max)
        self._pending = bytearray()  # stream bytes that arrived before the keys
        self._decryptor: AesStreamDecryptor | None = None
        self._after_keys: bytes | None = None
        self.opening: Opening | None = None
        self.gui_task_id = ""
        if opening is not None:
            self._accept(opening, self._remainder_of(opening))

    def _feed(self, data: bytes) -> None:
        if self._reader is not None:
            self._reader.receive_data(data)
            return
        self._stream_in(data)

    def _stream_in(self, data: bytes) -> None:
        if self._decryptor is None:
            self._pending += data
            if len(self._pending) > self._max_block_payload:
                raise RemoteProtocolError("too much data before the task was found")
            return
        plain = self._decryptor.update(data)
        if plain:
            self._receive(ev.ResponseData(plain))

    def _parse(self) -> None:
        if self._state is State.OPENING:
            assert self._reader is not None
            opening = self._reader.next_opening()
            if opening is None:
                return
            self._accept(opening, self._remainder_of(opening))

    def _remainder_of(self, opening: Opening) -> bytes:
        # spec §16: the reference skips CR/LF after the line even when they are ciphertext; optional here.
        return opening.remainder if self._skip_crlf else opening.raw_remainder

    def _accept(self, opening: Opening, remainder: bytes) -> None:
        if opening.type_connection != self.connection_type:
            raise LocalProtocolError(f"opening for {opening.type_connection!r} given to a response machine")
        self._reader = None
        self.opening = opening
        self.gui_task_id = opening.get_text("gui_task_id")
        fields = {k: v for k, v in opening.fields.items() if k != "type_connection"}
        self._receive(ev.OpenConnection(opening.type_connection, fields, opening.aes_cipher))
        if remainder:
            self._pending += remainder

    def _on_eof(self) -> None:
        if self._state is State.STREAM and self._decryptor is not None:
            last = self._decryptor.finalize()
            if last:
                self._receive(ev.ResponseData(last))
            self._receive(ev.ResponseEnd())
            self._close_reason = "eof"
            return
        if self._state is State.KEYS:
            return  # the whole stream may be here already; it is decrypted once the caller gives the keys
        super()._on_eof()

    def _encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.ResponseKeys):
            key, iv = _key_bytes(event.aes_ckey, event.aes_ivec)
            self._decryptor = AesStreamDecryptor(key, iv)
            pending, self._pending = bytes(self._pending), bytearray()
            if pending:
                # Decrypted after the move to STREAM (see _move) so the events are legal there.
                self._after_keys = pending
            return b""
        return super()._encode(event)

    def _move(self, name: str, *, sent: bool) -> None:
        super()._move(name, sent=sent)
        pending = self._after_keys
        if name == "ResponseKeys" and pending:
            self._after_keys = None
            self._stream_in(pending)


class ResponsesClient(HandshakeClient):
    """Sensor side of `responses`."""

    connection_type = "responses"

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        return [ev.ResponseReply(payload.decode("utf-8", "replace") or "(empty reply)")]

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.ResponseItem):
            return self._aes_block(event.task_id.encode("utf-8", "surrogateescape") + b"#" + event.output)
        return super()._encode_data(event)


class ResponsesServer(HandshakeServer):
    """Central side of `responses`."""

    connection_type = "responses"

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        # The reference looks for '#' with strchr after overwriting the last byte with NUL: a '#' that is the
        # last byte, or that follows a NUL byte, is not found.
        head = payload[:-1]
        nul = head.find(b"\0")
        if nul >= 0:
            head = head[:nul]
        sep = head.find(b"#")
        if sep < 0:
            return [ev.Rejected(MISSING_TASK_ID, MISSING_TASK_ID, payload[:256])]
        return [ev.ResponseItem(payload[:sep].decode("utf-8", "surrogateescape"), payload[sep + 1:])]

    def _input_name(self, event: ev.Event) -> str:
        if isinstance(event, ev.Rejected):
            return "Rejected/reply" if event.reply is not None else "Rejected/noreply"
        return super()._input_name(event)

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.ResponseReply):
            return self._aes_block(event.text.encode("utf-8"))
        return super()._encode_data(event)
