"""The generic RSA/AES handshake (spec §6, facts §3.1) as client and server base machines.

Client:  send OpenConnection → receive RsaKey → send Credentials → receive HandshakeOK | Refuse.
Server:  receive OpenConnection → send RsaKey → receive Credentials (password checked here) →
         send HandshakeOK | Refuse.

The server's RSA private key and the client's AES key strings are injected (the Trio layer keeps a key pool;
tests stay deterministic). Data-phase blocks are AES both ways; subclasses implement `_data_event(payload)` and
`_encode_data(event)`.
"""

from __future__ import annotations

import calendar
import datetime
import hashlib
import hmac
import secrets
from typing import Any

from vmproto.wire import events as ev
from vmproto.wire import vmjson
from vmproto.wire._state import Role, State
from vmproto.wire.connection import Connection
from vmproto.wire.crypto import public_key_pem, rsa_decrypt, rsa_encrypt
from vmproto.wire.errors import LocalProtocolError, RemoteProtocolError
from vmproto.wire.framing import byte_sum, encode_block, verify_checksum
from vmproto.wire.opening import Opening, OpeningReader, encode_opening

__all__ = [
    "HandshakeClient",
    "HandshakeServer",
    "FAILED_READ_CREDENTIALS",
    "BAD_PASSWORD",
    "BAD_TIME",
    "json_text",
    "parse_wire_time",
]

FAILED_READ_CREDENTIALS = "failed read password & aes keys"
BAD_PASSWORD = "bad password"
BAD_TIME = "bad time"
_OK = b"OK"
# spec §6.6: both passwords go through HMAC-SHA-256 under a per-process random key before compare_digest, so the
# comparison time depends on neither their content nor their length.
_PASSWORD_MAC_KEY = secrets.token_bytes(32)


def _password_mac(text: str) -> bytes | None:
    """HMAC of a password's bytes (UTF-8; surrogate escapes give back non-UTF-8 bytes), or None when the text
    has no byte form (a lone surrogate from a JSON escape: it cannot equal any configured password)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None
    return hmac.new(_PASSWORD_MAC_KEY, raw, hashlib.sha256).digest()


def json_text(fields: dict[str, Any], key: str) -> str:
    """A JSON member as json-c's get_string renders it: strings as is, numbers as decimal text, booleans
    `true`/`false`, missing or null as ""."""
    value = fields.get(key)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return vmjson.dumps(value).decode("utf-8", "surrogateescape")


def parse_wire_time(text: str, utc_offset: float = 0.0) -> float | None:
    """Parse `YYYY-MM-DD HH:MM:SS` as local time `utc_offset` seconds east of UTC; None when malformed."""
    try:
        moment = datetime.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return calendar.timegm(moment.timetuple()) - utc_offset


class HandshakeClient(Connection):
    """Client half of the generic handshake (types query, store, packetbuffer block, responses, keycheck)."""

    role = Role.CLIENT
    _credentials_event: type[ev.Event] = ev.Credentials
    _rsa_key_marker = b"key"  # the reference client only checks the reply contains "key" (service: "rsa_key")

    def __init__(self, **caps: Any) -> None:
        super().__init__(**caps)
        self._server_pem: bytes | None = None

    # input --------------------------------------------------------------------------------------------------
    def _parse(self) -> None:
        state = self._state
        mode = "plain" if state in (State.RSA_KEY, State.HANDSHAKE_REPLY) else self._data_mode()
        payload = self._next_block(mode)
        if payload is None:
            return
        if state is State.RSA_KEY:
            self._receive(self._parse_rsa_key(payload))
        elif state is State.HANDSHAKE_REPLY:
            self._receive(self._handshake_reply(payload))
        else:
            for event in self._data_events(payload):
                self._receive(event)

    def _parse_rsa_key(self, payload: bytes) -> ev.RsaKey:
        if self._rsa_key_marker not in payload:
            raise RemoteProtocolError("failed read rsa key")
        fields = vmjson.loads(payload)
        pem = fields.get("rsa_key") if isinstance(fields, dict) else None
        if not isinstance(pem, str) or not pem:
            raise RemoteProtocolError("failed read rsa key")
        self._server_pem = pem.encode("utf-8", "surrogateescape")
        return ev.RsaKey(self._server_pem)

    def _handshake_reply(self, payload: bytes) -> ev.Event:
        if payload == _OK:
            return ev.HandshakeOK()
        return ev.Refuse(payload.decode("utf-8", "replace") or "(empty reply)")

    def _data_mode(self) -> str:
        return "aes"

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        raise NotImplementedError

    # output -------------------------------------------------------------------------------------------------
    def _encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.OpenConnection):
            return self._encode_opening(event)
        if isinstance(event, self._credentials_event):
            return self._encode_credentials(event)
        if isinstance(event, ev.ConnectionClosed):
            return b""
        return self._encode_data(event)

    def _encode_opening(self, event: ev.OpenConnection) -> bytes:
        if event.type_connection != self.connection_type:
            raise LocalProtocolError(f"this machine opens {self.connection_type!r}, not {event.type_connection!r}")
        if event.aes_cipher is not None:
            raise LocalProtocolError("only GUI connections wrap the opening line in manager AES")
        return encode_opening({"type_connection": event.type_connection, **event.fields})

    def _credential_fields(self, event: Any) -> dict[str, Any]:
        return {"password": event.password, "aes_ckey": event.aes_ckey, "aes_ivec": event.aes_ivec}

    def _encode_credentials(self, event: Any) -> bytes:
        assert self._server_pem is not None
        text = vmjson.dumps(self._credential_fields(event))
        block = encode_block(rsa_encrypt(self._server_pem, text), byte_sum(text))
        try:
            self._set_keys(event.aes_ckey, event.aes_ivec)
        except RemoteProtocolError as exc:  # our own keys: that is a local mistake
            raise LocalProtocolError(exc.reason) from exc
        return block

    def _encode_data(self, event: ev.Event) -> bytes:
        raise LocalProtocolError(f"{type(event).__name__} cannot be sent on {self.connection_type}")


class HandshakeServer(Connection):
    """Server half of the generic handshake.

    `rsa_key` is the RSA private key (cryptography object) of this connection; `password` the server's
    `server_password`. `opening` (from the Acceptor) skips reading the opening line here.
    """

    role = Role.SERVER

    def __init__(self, *, rsa_key: Any, password: str, opening: Opening | None = None, manager_key: Any = None,
                 **caps: Any) -> None:
        super().__init__(**caps)
        if not isinstance(password, str):
            raise LocalProtocolError("password must be a string")
        self._rsa_key = rsa_key
        digest = _password_mac(password)
        if digest is None:
            raise LocalProtocolError("server password has no byte form (lone surrogate)")
        self._password_digest = digest
        self._pem: bytes | None = None
        self._opening_reader: OpeningReader | None = OpeningReader(max_size=self._opening_max,
                                                                   manager_key=manager_key)
        self.opening: Opening | None = None
        if opening is not None:
            self._accept_opening(opening)

    # input --------------------------------------------------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        if self._opening_reader is not None:
            self._opening_reader.receive_data(data)
        else:
            super()._feed(data)

    def _parse(self) -> None:
        if self._state is State.OPENING:
            assert self._opening_reader is not None
            opening = self._opening_reader.next_opening()
            if opening is not None:
                self._accept_opening(opening)
            return
        payload = self._next_rsa_block() if self._state is State.CREDENTIALS else self._next_block("aes")
        if payload is None:
            return
        if self._state is State.CREDENTIALS:
            self._receive(self._check_credentials(payload))
        else:
            for event in self._data_events(payload):
                self._receive(event)

    def _accept_opening(self, opening: Opening) -> None:
        if opening.type_connection != self.connection_type:
            raise LocalProtocolError(
                f"opening for {opening.type_connection!r} given to a {self.connection_type!r} machine"
            )
        self._opening_reader = None
        self.opening = opening
        fields = {k: v for k, v in opening.fields.items() if k != "type_connection"}
        self._receive(ev.OpenConnection(opening.type_connection, fields, opening.aes_cipher))
        self._after_opening(opening)

    def _after_opening(self, opening: Opening) -> None:
        """Hook: what to do with the opening line's remainder (the reference drops it, except `response`)."""

    def _next_rsa_block(self) -> bytes | None:
        got = self._blocks.next_block()
        if got is None:
            return None
        header, payload = got
        plain = rsa_decrypt(self._rsa_key, payload)
        verify_checksum(header, plain)
        return plain

    def _load_credentials(self, payload: bytes) -> dict[str, Any]:
        # The reference refuses silently unless the text contains "password" (facts §3.1 step 4).
        if b"password" not in payload:
            raise RemoteProtocolError(FAILED_READ_CREDENTIALS)
        fields = vmjson.loads(payload)
        if not isinstance(fields, dict):
            raise RemoteProtocolError(FAILED_READ_CREDENTIALS)
        return fields

    def _check_password(self, fields: dict[str, Any]) -> None:
        """Compare the received password with ``server_password`` in constant time (spec §6.6, §17.2).

        Raises :class:`RemoteProtocolError` ``bad password`` (plain reply, close) on a mismatch. Neither
        password appears in the error.
        """
        received = _password_mac(json_text(fields, "password"))
        expected = self._password_digest
        # compare_digest runs even when the received text has no byte form, so that case takes the same time.
        same = hmac.compare_digest(received or bytes(len(expected)), expected)
        if not same or received is None:
            raise RemoteProtocolError(BAD_PASSWORD, reply=BAD_PASSWORD.encode(), reply_mode="plain")

    def _install_keys(self, fields: dict[str, Any]) -> None:
        try:
            self._set_keys(json_text(fields, "aes_ckey"), json_text(fields, "aes_ivec"))
        except RemoteProtocolError as exc:
            # The reference would run with whatever OpenSSL read past the strings; we refuse (spec §17).
            raise RemoteProtocolError(f"{FAILED_READ_CREDENTIALS}: {exc.reason}") from exc

    def _check_credentials(self, payload: bytes) -> ev.Event:
        fields = self._load_credentials(payload)
        self._check_password(fields)
        self._install_keys(fields)
        return ev.Credentials(
            json_text(fields, "password"), json_text(fields, "aes_ckey"), json_text(fields, "aes_ivec")
        )

    def _data_events(self, payload: bytes) -> list[ev.Event]:
        raise NotImplementedError

    # output -------------------------------------------------------------------------------------------------
    def _input_name(self, event: ev.Event) -> str:
        if isinstance(event, ev.Refuse) and event.delay > 0:
            return "Refuse/delayed"
        return type(event).__name__

    def _encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.RsaKey):
            if self._pem is None:
                self._pem = public_key_pem(self._rsa_key)
            if event.public_pem != self._pem:
                raise LocalProtocolError("RsaKey does not carry this connection's public key")
            return encode_block(vmjson.dumps({"rsa_key": self._pem.decode("ascii")}))
        if isinstance(event, ev.Refuse):
            block = encode_block(event.text.encode("utf-8"))
            if event.delay > 0:
                self._require_now("a delayed refusal")
                # Held back until handle_timer(); the deadline is armed from the event, not the table.
                self._pending_refusal = block
                self._refusal_delay = float(event.delay)
                return b""
            return block
        if isinstance(event, ev.ConnectionClosed):
            return b""
        return self._encode_data(event)

    def _move(self, name: str, *, sent: bool) -> None:
        super()._move(name, sent=sent)
        if name == "Refuse/delayed" and self._now is not None:
            self._deadline = self._now + self._refusal_delay

    def _on_timer_action(self, action: str, now: float) -> bytes:
        if action == "refuse":
            data = self._pending_refusal
            self._close_reason = "refused"
            self._move("ConnectionClosed", sent=True)
            return data
        return super()._on_timer_action(action, now)

    def _encode_data(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.HandshakeOK):
            return encode_block(_OK)
        raise LocalProtocolError(f"{type(event).__name__} cannot be sent on {self.connection_type}")

    @property
    def public_pem(self) -> bytes:
        """This connection's SPKI PEM (what to put in `RsaKey`)."""
        if self._pem is None:
            self._pem = public_key_pem(self._rsa_key)
        return self._pem
