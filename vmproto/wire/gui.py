"""GUI-facing connection machines on the C/S port (spec §12, facts §3.4/§4.2/§4.8): gui_command, manager_command.

No handshake and no blocks: the GUI sends one opening object (plain + CRLF, or wrapped in the manager AES
`<cipher>:<ciphertext>:sea`) and reads raw bytes until the server closes.

gui_command server: after the opening, GuiCommand(sensor_id, command, requested, aes_cipher). When the GUI did not
use AES, a manager key exists and the command is not exempt (`not_need_aes(command)`, from the manager's command
table), the forwarded command is the literal `need_aes`. The caller then answers:
  RawReply(MISSING_SERVICE)                → no service for that sensor (then close);
  ReplyData(...)* + ReplyEnd()             → the task output from a `response` connection; for an AES GUI this is
                                             `aes:` + a new stream with the GUI's cipher and the manager key,
                                             prefix written at once and the stream always finalised;
  RawReply(output)                         → a `responses` output (raw even for AES GUIs, as observed);
and after 300 s without completion `handle_timer()` writes raw `timeout` and closes.

manager_command server: ManagerCommand(command); answer ActiveServices(...) for `active`, else
`unknown_command(command)`.

Clients (GUI side): send OpenConnection; received bytes come back as ReplyData (decrypted when the reply starts
with `aes:` and the client holds the manager key), then ConnectionClosed("eof").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmproto.wire import events as ev
from vmproto.wire import vmjson
from vmproto.wire._state import Role, State
from vmproto.wire.connection import Connection
from vmproto.wire.crypto import AesStreamDecryptor, ManagerAesKey, ManagerReplyEncryptor, wrap_manager_request
from vmproto.wire.errors import LocalProtocolError
from vmproto.wire.opening import Opening, OpeningReader, encode_opening

__all__ = [
    "GuiCommandClient",
    "GuiCommandServer",
    "ManagerCommandClient",
    "ManagerCommandServer",
    "MISSING_SERVICE",
    "TIMEOUT_REPLY",
    "NEED_AES",
    "unknown_command",
    "active_services_json",
]

MISSING_SERVICE = b"missing sniffer service - connect sensor?"
TIMEOUT_REPLY = b"timeout"
NEED_AES = "need_aes"
_AES_PREFIX = b"aes:"


def unknown_command(command: str) -> ev.RawReply:
    """The manager_command reply for anything but `active`."""
    return ev.RawReply(b"unknown command: " + command.encode("utf-8", "surrogateescape"))


def active_services_json(services: tuple[tuple[str, int, int], ...]) -> bytes:
    """`{"count":n,"services":[{"ip":..,"port":..,"sensor_id":..},...]}`; `services` omitted when empty."""
    out: dict[str, Any] = {"count": len(services)}
    if services:
        out["services"] = [{"ip": ip, "port": port, "sensor_id": sid} for ip, port, sid in services]
    return vmjson.dumps(out)


class _GuiClientBase(Connection):
    role = Role.CLIENT
    _fields: tuple[str, ...] = ()

    def __init__(self, *, manager_key: ManagerAesKey | None = None, cipher_name: str = "aes-128-cbc",
                 **caps: Any) -> None:
        super().__init__(**caps)
        self._manager_key = manager_key
        self._cipher_name = cipher_name
        self._used_aes = False
        self._head = bytearray()  # first bytes, until we know whether the reply is `aes:` + stream
        self._decided = False
        self._decryptor: AesStreamDecryptor | None = None
        self._raw = bytearray()

    def _encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.OpenConnection):
            if event.type_connection != self.connection_type:
                raise LocalProtocolError(f"this machine opens {self.connection_type!r}")
            missing = [name for name in self._fields if name not in event.fields]
            if missing:
                raise LocalProtocolError(f"opening needs {missing}")
            line = encode_opening({"type_connection": event.type_connection, **event.fields})
            if event.aes_cipher is None:
                return line
            if self._manager_key is None:
                raise LocalProtocolError("an AES opening needs the manager key")
            self._used_aes = True
            self._cipher_name = event.aes_cipher
            return wrap_manager_request(line[:-2], self._manager_key, event.aes_cipher)
        return super()._encode(event)

    def _feed(self, data: bytes) -> None:
        if self._decided:
            self._raw += data
            return
        self._head += data
        if len(self._head) >= len(_AES_PREFIX) or not _AES_PREFIX.startswith(bytes(self._head)):
            self._decide()

    def _decide(self) -> None:
        self._decided = True
        head, self._head = bytes(self._head), bytearray()
        if self._used_aes and head.startswith(_AES_PREFIX):
            assert self._manager_key is not None
            self._decryptor = AesStreamDecryptor(self._manager_key.key, self._manager_key.iv, self._cipher_name)
            head = head[len(_AES_PREFIX):]
        self._raw += head

    def _parse(self) -> None:
        if not self._raw:
            return
        data, self._raw = bytes(self._raw), bytearray()
        if self._decryptor is not None:
            data = self._decryptor.update(data)
        if data:
            self._receive(ev.ReplyData(data))

    def _on_eof(self) -> None:
        if not self._decided and self._head:
            self._decide()
            self._parse()
            if self._events:
                return
        if self._decryptor is not None:
            last = self._decryptor.finalize()
            self._decryptor = None
            if last:
                self._receive(ev.ReplyData(last))
                return
        super()._on_eof()


class GuiCommandClient(_GuiClientBase):
    """GUI side of gui_command: OpenConnection(fields={"sensor_id": N, "command": "..."}), optional AES."""

    connection_type = "gui_command"
    _fields = ("sensor_id", "command")


class ManagerCommandClient(_GuiClientBase):
    """Tool side of manager_command: OpenConnection(fields={"command": "active"})."""

    connection_type = "manager_command"
    _fields = ("command",)


class _GuiServerBase(Connection):
    role = Role.SERVER

    def __init__(self, *, opening: Opening | None = None, manager_key: ManagerAesKey | None = None,
                 **caps: Any) -> None:
        super().__init__(**caps)
        self._manager_key = manager_key
        self._reader: OpeningReader | None = OpeningReader(max_size=self._opening_max, manager_key=manager_key)
        self.opening: Opening | None = None
        if opening is not None:
            self._accept(opening)

    def _feed(self, data: bytes) -> None:
        if self._reader is not None:
            self._reader.receive_data(data)
        # After the opening the reference never reads from a GUI socket again; the bytes are dropped.

    def _parse(self) -> None:
        if self._state is State.OPENING:
            assert self._reader is not None
            opening = self._reader.next_opening()
            if opening is not None:
                self._accept(opening)

    def _accept(self, opening: Opening) -> None:
        if opening.type_connection != self.connection_type:
            raise LocalProtocolError(f"opening for {opening.type_connection!r} given to {self.connection_type}")
        self._reader = None
        self.opening = opening
        fields = {k: v for k, v in opening.fields.items() if k != "type_connection"}
        self._receive(ev.OpenConnection(opening.type_connection, fields, opening.aes_cipher))
        self._receive(self._command_event(opening))

    def _command_event(self, opening: Opening) -> ev.Event:
        raise NotImplementedError

    def _on_eof(self) -> None:
        # The GUI half-closing after its request is normal; the reply still goes out (reference: no read).
        if self._state is State.OPENING:
            super()._on_eof()


class GuiCommandServer(_GuiServerBase):
    """Central side of gui_command.

    `not_need_aes(command) -> bool`: the manager's "works without AES" test for a command line (the manager
    command table lives outside the wire core); `manager_enable_unencrypted` disables the rewrite.
    """

    connection_type = "gui_command"

    def __init__(self, *, not_need_aes: Callable[[str], bool] | None = None,
                 manager_enable_unencrypted: bool = False, **kwargs: Any) -> None:
        self._not_need_aes = not_need_aes or (lambda _command: False)
        self._unencrypted_ok = manager_enable_unencrypted
        self._encryptor: ManagerReplyEncryptor | None = None
        super().__init__(**kwargs)

    def _command_event(self, opening: Opening) -> ev.Event:
        requested = opening.get_text("command")
        command = requested
        if (opening.aes_cipher is None and self._manager_key is not None and not self._unencrypted_ok
                and not self._not_need_aes(requested)):
            command = NEED_AES
        if opening.aes_cipher is not None and self._manager_key is not None:
            self._encryptor = ManagerReplyEncryptor(self._manager_key, opening.aes_cipher, eager_prefix=True)
        return ev.GuiCommand(_atol(opening), command, requested, opening.aes_cipher)

    def _encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.RawReply):
            return event.data
        if isinstance(event, ev.ReplyData):
            return self._encryptor.update(event.data) if self._encryptor is not None else event.data
        if isinstance(event, ev.ReplyEnd):
            return self._encryptor.finalize() if self._encryptor is not None else b""
        return super()._encode(event)

    def _on_timer_action(self, action: str, now: float) -> bytes:
        if action == "gui_timeout":
            return self.send(ev.RawReply(TIMEOUT_REPLY), now)
        return super()._on_timer_action(action, now)


def _atol(opening: Opening) -> int:
    # sensor_id is read with atol into an int32 parameter: vmjson.atoi has exactly those semantics.
    return vmjson.atoi(opening.fields.get("sensor_id"))


class ManagerCommandServer(_GuiServerBase):
    """Central side of manager_command."""

    connection_type = "manager_command"

    def _command_event(self, opening: Opening) -> ev.Event:
        return ev.ManagerCommand(opening.get_text("command"))

    def _encode(self, event: ev.Event) -> bytes:
        if isinstance(event, ev.ActiveServices):
            return active_services_json(event.services)
        if isinstance(event, ev.RawReply):
            return event.data
        return super()._encode(event)
