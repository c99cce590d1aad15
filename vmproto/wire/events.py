"""Events of the connection state machines (spec §6-§12): what `next_event()` returns and `send()` takes.

Every event is a frozen dataclass with `__slots__`, validated in `__post_init__`, so events are plain values that
compare, log and hash well (h11 style). The same class is used in both directions: a client `send(Pong())` and the
server's `next_event()` returning `Pong()` are the same value. Which events a connection type accepts in which
state is written down in `vmproto.wire._state` (and spec/machines/*.toml).

`NEED_DATA` is the sentinel `next_event()` returns when more bytes are needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from vmproto.wire.errors import LocalProtocolError

__all__ = [
    "NEED_DATA",
    "InvalidEvent",
    "Event",
    "OpenConnection",
    "RsaKey",
    "Credentials",
    "PacketbufferCredentials",
    "ServiceCredentials",
    "HandshakeOK",
    "StoreAccepted",
    "ServiceParameters",
    "ServiceAccepted",
    "Refuse",
    "ConnectionClosed",
    "Rejected",
    "Ping",
    "Pong",
    "Stop",
    "Task",
    "ChartPush",
    "ChartReply",
    "StoreQueries",
    "StoreCheck",
    "StoreOK",
    "StoreError",
    "QueryRequest",
    "QueryResponse",
    "End",
    "PacketbufferBlock",
    "BlockLoss",
    "BlockReply",
    "ResponseKeys",
    "ResponseData",
    "ResponseEnd",
    "ResponseItem",
    "ResponseReply",
    "GuiCommand",
    "ManagerCommand",
    "ReplyData",
    "ReplyEnd",
    "RawReply",
    "ActiveServices",
    "KeycheckRequest",
    "KeycheckReply",
]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")


class InvalidEvent(LocalProtocolError):
    """An event failed its validation. Raised to the caller from `send()`; when a machine builds the event from
    peer data, the machine turns it into a RemoteProtocolError (the peer sent something unrepresentable)."""


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidEvent(message)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_bytes(value: object) -> bool:
    return isinstance(value, bytes)


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of all events."""


# --------------------------------------------------------------------------------------------------------- opening


@dataclass(frozen=True, slots=True)
class OpenConnection(Event):
    """The opening line (spec §1): `type_connection` plus the type's extra fields in wire order.

    `fields` excludes `type_connection`; it is frozen into a read-only mapping. `aes_cipher` is the manager AES
    cipher name when the line was (or is to be) AES-wrapped (gui_command / manager_command only), else None.
    """

    type_connection: str
    fields: Mapping[str, Any] = field(default_factory=dict, hash=False)
    aes_cipher: str | None = None

    def __post_init__(self) -> None:
        _require(_is_str(self.type_connection) and self.type_connection != "", "type_connection must be a string")
        _require(isinstance(self.fields, Mapping), "fields must be a mapping")
        _require("type_connection" not in self.fields, "type_connection goes in its own attribute")
        _require(self.aes_cipher is None or _is_str(self.aes_cipher), "aes_cipher must be a string or None")
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OpenConnection):
            return NotImplemented
        return (self.type_connection, list(self.fields.items()), self.aes_cipher) == (
            other.type_connection,
            list(other.fields.items()),
            other.aes_cipher,
        )

    def __hash__(self) -> int:
        return hash((self.type_connection, tuple(self.fields), self.aes_cipher))


# ------------------------------------------------------------------------------------------------------- handshake


@dataclass(frozen=True, slots=True)
class RsaKey(Event):
    """Server → client plain block `{"rsa_key":"<PEM>"}` (spec §6). `public_pem` is the SPKI PEM text."""

    public_pem: bytes

    def __post_init__(self) -> None:
        _require(_is_bytes(self.public_pem) and self.public_pem != b"", "public_pem must be non-empty bytes")


_SECRET_FIELDS = frozenset({"password", "aes_ckey", "aes_ivec"})


def _masked_repr(event: Event) -> str:
    """``Name(field=value, ...)`` with the password and AES key strings shown as ``'***'`` (spec §17.4: events
    get logged and land in tracebacks; secrets must not)."""
    parts = []
    for f in fields(event):
        if not f.repr:
            continue
        value = getattr(event, f.name)
        parts.append(f"{f.name}='***'" if f.name in _SECRET_FIELDS else f"{f.name}={value!r}")
    return f"{type(event).__name__}({', '.join(parts)})"


def _check_keys(password: object, aes_ckey: object, aes_ivec: object) -> None:
    _require(_is_str(password), "password must be a string")
    _require(_is_str(aes_ckey) and _is_str(aes_ivec), "aes_ckey and aes_ivec must be strings")


@dataclass(frozen=True, slots=True)
class Credentials(Event):
    """Client → server RSA block of the generic handshake (spec §6): password and the AES key strings."""

    password: str
    aes_ckey: str
    aes_ivec: str

    def __post_init__(self) -> None:
        _check_keys(self.password, self.aes_ckey, self.aes_ivec)

    __repr__ = _masked_repr


@dataclass(frozen=True, slots=True)
class PacketbufferCredentials(Event):
    """Packetbuffer credentials (spec §6, §9): the generic fields plus the sensor's local `time`
    (`YYYY-MM-DD HH:MM:SS`, "" when absent), `sensor_id` and `sensor_name`."""

    password: str
    aes_ckey: str
    aes_ivec: str
    time: str
    sensor_id: int
    sensor_name: str

    def __post_init__(self) -> None:
        _check_keys(self.password, self.aes_ckey, self.aes_ivec)
        _require(_is_str(self.time) and _is_str(self.sensor_name), "time and sensor_name must be strings")
        _require(type(self.sensor_id) is int, "sensor_id must be an int")

    __repr__ = _masked_repr


@dataclass(frozen=True, slots=True)
class ServiceCredentials(Event):
    """Service credentials (spec §7, facts §3.2): the fields a sensor sends, in wire order.

    Flags are booleans here; on the wire they are the number 1 when set and absent when not (`check_ping_response`
    and `auto_parameters` are always written by current sensors, as 1 or not at all).
    """

    sensor_id: int
    password: str
    aes_ckey: str
    aes_ivec: str
    sensor_version: int
    sensor_string: str = ""
    restore: bool = False
    check_ping_response: bool = True
    auto_parameters: bool = True
    compress_types: str = "gzip,zstd,lzo"
    remote_chart_server: bool = False
    use_encode_data: bool = False

    def __post_init__(self) -> None:
        _check_keys(self.password, self.aes_ckey, self.aes_ivec)
        _require(type(self.sensor_id) is int and type(self.sensor_version) is int, "ids must be ints")
        _require(_is_str(self.sensor_string) and _is_str(self.compress_types), "strings expected")
        for name in ("restore", "check_ping_response", "auto_parameters", "remote_chart_server", "use_encode_data"):
            _require(isinstance(getattr(self, name), bool), f"{name} must be a bool")

    __repr__ = _masked_repr

    @property
    def service_key(self) -> str:
        """The registry key the server uses: `"<sensor_id>"` or `"<sensor_id>/<sensor_string>"`."""
        return f"{self.sensor_id}/{self.sensor_string}" if self.sensor_string else str(self.sensor_id)


@dataclass(frozen=True, slots=True)
class HandshakeOK(Event):
    """Server → client plain block `OK` ending the generic handshake (spec §6)."""


@dataclass(frozen=True, slots=True)
class StoreAccepted(Event):
    """Store handshake reply (spec §8): `{"rslt":"OK","check_store":1,"check_time":1}`, or plain `OK` when both
    flags are false (the server's `server_cp_store_simple_connect_response`)."""

    check_store: bool = True
    check_time: bool = True


@dataclass(frozen=True, slots=True)
class ServiceParameters:
    """The auto-parameter reply of the service handshake (spec §7), fields in wire order; None = absent.

    Compression values are the numeric codes 0 none, 1 gzip, 2 lzo, 3 zstd.
    """

    use_blocks_pb: bool = False
    deduplicate: int | None = None
    deduplicate_ipheader: int | None = None
    mysql_new_store: int | None = None
    mysql_set_id: bool = False
    mysql_concat_limit: int | None = None
    csv_store_format: int | None = None
    charts_cache_store: bool = False
    type_compress: int | None = None
    type_compress_query: int | None = None
    type_compress_store: int | None = None
    enable_responses_sender: bool = True

    def __post_init__(self) -> None:
        for name in ("deduplicate", "deduplicate_ipheader", "mysql_new_store", "mysql_concat_limit",
                     "csv_store_format", "type_compress", "type_compress_query", "type_compress_store"):
            value = getattr(self, name)
            _require(value is None or type(value) is int, f"{name} must be an int or None")
        for name in ("type_compress", "type_compress_query", "type_compress_store"):
            value = getattr(self, name)
            _require(value is None or 0 <= value <= 3, f"{name} must be a compression code 0..3")

    @property
    def query_compression(self) -> int:
        """What a (non-packetbuffer) sensor uses for `query` requests: `type_compress_query`, else gzip."""
        return 1 if self.type_compress_query is None else self.type_compress_query

    @property
    def store_compression(self) -> int:
        """What a sensor uses for `store` messages: `type_compress_store`, else `type_compress`, else gzip."""
        if self.type_compress_store is not None:
            return self.type_compress_store
        return 1 if self.type_compress is None else self.type_compress


@dataclass(frozen=True, slots=True)
class ServiceAccepted(Event):
    """Service handshake reply (spec §7): the auto-parameter JSON, or plain `OK` when `parameters` is None."""

    parameters: ServiceParameters | None = None

    def __post_init__(self) -> None:
        _require(self.parameters is None or isinstance(self.parameters, ServiceParameters), "bad parameters")


@dataclass(frozen=True, slots=True)
class Refuse(Event):
    """Server → client plain block with a refusal text, then close (spec §6, §7).

    `delay` (seconds, sending side only) holds the reply back that long first, as the reference does for a
    duplicate service (5 s); the machine writes it from `handle_timer()`.
    """

    text: str
    delay: float = 0.0

    def __post_init__(self) -> None:
        _require(_is_str(self.text) and self.text != "", "text must be a non-empty string")
        _require(isinstance(self.delay, int | float) and self.delay >= 0, "delay must be >= 0")


# ------------------------------------------------------------------------------------------------ generic control


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The connection ended: `reason` is "eof" (peer closed), "timeout", or "closed" (we closed, when sent)."""

    reason: str = "closed"


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """The peer sent a data-phase message the reference does not act on; the connection stays usable.

    `reason` says why (the reference's error or log text). `reply` is the text the protocol prescribes to answer
    (as this connection's normal reply event, e.g. `BlockReply(reply)` / `ResponseReply(reply)`), or None when
    the reference answers nothing (store message without `|`, empty query, service payload without `/`).
    """

    reason: str
    reply: str | None = None
    payload: bytes = b""


# --------------------------------------------------------------------------------------------------------- service


@dataclass(frozen=True, slots=True)
class Ping(Event):
    """Service: server → client `ping` (spec §7)."""


@dataclass(frozen=True, slots=True)
class Pong(Event):
    """Service: client → server plain block `pong`."""


@dataclass(frozen=True, slots=True)
class Stop(Event):
    """Service: client → server plain block `stop` (answers a ping when the sensor shuts down)."""


@dataclass(frozen=True, slots=True)
class Task(Event):
    """Service: server → client GUI task `<task_id>/<command>` (spec §7, §12). `task_id` never contains `/`."""

    task_id: str
    command: bytes

    def __post_init__(self) -> None:
        _require(_is_str(self.task_id) and self.task_id != "" and "/" not in self.task_id, "bad task_id")
        _require(_is_bytes(self.command), "command must be bytes")


@dataclass(frozen=True, slots=True)
class ChartPush(Event):
    """Service: server → client `rch:` + chart-cache body (spec §7). `body` is uncompressed here."""

    body: bytes

    def __post_init__(self) -> None:
        _require(_is_bytes(self.body) and self.body != b"", "body must be non-empty bytes")


@dataclass(frozen=True, slots=True)
class ChartReply(Event):
    """Service: client → server plain reply to an `rch:` push (`OK`, `queue is full`, `error in decompress ...`)."""

    text: str

    def __post_init__(self) -> None:
        _require(_is_str(self.text), "text must be a string")


# ----------------------------------------------------------------------------------------------------------- store


@dataclass(frozen=True, slots=True)
class StoreQueries(Event):
    """Store: one message (spec §8). Sent: encoded, compressed per the negotiated codec. Received: decoded.

    `message` is a `vmproto.wire.store_msg.StoreMessage`.
    """

    message: Any

    def __post_init__(self) -> None:
        _require(hasattr(self.message, "id_main") and hasattr(self.message, "queries"), "message must be a "
                 "StoreMessage")


@dataclass(frozen=True, slots=True)
class StoreCheck(Event):
    """Store: client → server `check` (asks whether the server's queue has room)."""


@dataclass(frozen=True, slots=True)
class StoreOK(Event):
    """Store: server → client AES `OK` (message accepted, or `check` passed)."""


@dataclass(frozen=True, slots=True)
class StoreError(Event):
    """Store: server → client JSON error (spec §8). Sent by the server only as the queue-full reply
    (`usleep` µs); received by the client with every field the server gave."""

    error: str
    next_attempt: bool = True
    usleep: int | None = None
    quietly: bool = False
    keep_connect: bool = False

    def __post_init__(self) -> None:
        _require(_is_str(self.error), "error must be a string")
        _require(self.usleep is None or (type(self.usleep) is int and self.usleep >= 0), "bad usleep")


# ----------------------------------------------------------------------------------------------------------- query


@dataclass(frozen=True, slots=True)
class QueryRequest(Event):
    """Query: one SQL request (spec §10); `csv` asks for the CSV result format (`CSV:` prefix on the wire).

    `compression` is, when received, the codec the request used (the reply mirrors it); ignored when sent (the
    client machine uses its negotiated codec).
    """

    sql: bytes
    csv: bool = False
    compression: int = 0

    def __post_init__(self) -> None:
        _require(_is_bytes(self.sql), "sql must be bytes")


@dataclass(frozen=True, slots=True)
class QueryResponse(Event):
    """Query: server → client result payload (spec §10), uncompressed here.

    `error`: an error reply; the reference writes those uncompressed even when the request was compressed.
    """

    payload: bytes
    error: bool = False

    def __post_init__(self) -> None:
        _require(_is_bytes(self.payload), "payload must be bytes")

    def decode(self) -> Any:
        """Return `query_result.decode_result(payload)` (QueryResult or QueryError); raises RemoteProtocolError."""
        from vmproto.wire.query_result import decode_result

        return decode_result(self.payload)


@dataclass(frozen=True, slots=True)
class End(Event):
    """Query: client → server `_END_` (always uncompressed); the server closes afterwards."""


# -------------------------------------------------------------------------------------------------- packetbuffer


@dataclass(frozen=True, slots=True)
class PacketbufferBlock(Event):
    """Packetbuffer: one `pcap_block_store` container (spec §9), validated on receipt.

    `duplicate`: same counter as the previous block of this connection; the server acknowledges but must drop it.
    `require_confirmation` / `counter` mirror the container header.
    """

    payload: bytes
    counter: int = 0
    require_confirmation: bool = True
    duplicate: bool = False

    def __post_init__(self) -> None:
        _require(_is_bytes(self.payload), "payload must be bytes")


@dataclass(frozen=True, slots=True)
class BlockLoss(Event):
    """Packetbuffer: warning `loss packetbuffer block` — the counter jumped from `previous` to `counter`."""

    previous: int
    counter: int


@dataclass(frozen=True, slots=True)
class BlockReply(Event):
    """Packetbuffer: server → client confirmation, `OK` or an error text (spec §9)."""

    text: str = "OK"

    def __post_init__(self) -> None:
        _require(_is_str(self.text) and self.text != "", "text must be a non-empty string")

    @property
    def ok(self) -> bool:
        return self.text == "OK"


# -------------------------------------------------------------------------------------------- response/responses


@dataclass(frozen=True, slots=True)
class ResponseKeys(Event):
    """Response (server): the caller found the task and its sensor's service AES strings; start decrypting.

    Writes nothing on the wire (the reference answers nothing on a `response` connection)."""

    aes_ckey: str
    aes_ivec: str

    def __post_init__(self) -> None:
        _require(_is_str(self.aes_ckey) and _is_str(self.aes_ivec), "keys must be strings")
        _require(self.aes_ckey != "" and self.aes_ivec != "", "keys must be non-empty")

    __repr__ = _masked_repr


@dataclass(frozen=True, slots=True)
class ResponseData(Event):
    """Response: plaintext output bytes of the command (spec §11); AES stream on the wire."""

    data: bytes

    def __post_init__(self) -> None:
        _require(_is_bytes(self.data), "data must be bytes")


@dataclass(frozen=True, slots=True)
class ResponseEnd(Event):
    """Response: end of output (client: final padded block, then close; server: stream complete)."""


@dataclass(frozen=True, slots=True)
class ResponseItem(Event):
    """Responses: `<task_id>#<output>` in one AES block (spec §11)."""

    task_id: str
    output: bytes

    def __post_init__(self) -> None:
        _require(_is_str(self.task_id) and "#" not in self.task_id, "task_id must be a string without '#'")
        _require(_is_bytes(self.output), "output must be bytes")


@dataclass(frozen=True, slots=True)
class ResponseReply(Event):
    """Responses: server → client `OK`, `missing gui task id` or `unknown gui task id`."""

    text: str = "OK"

    def __post_init__(self) -> None:
        _require(_is_str(self.text) and self.text != "", "text must be a non-empty string")


# ----------------------------------------------------------------------------------------------------------- GUI


@dataclass(frozen=True, slots=True)
class GuiCommand(Event):
    """gui_command (server): what to queue for the sensor (spec §12).

    `command` is what is forwarded (the literal `need_aes` when the rewrite applied), `requested` what the GUI
    asked for, `aes_cipher` the GUI's manager-AES cipher (None when the GUI used plain text).
    """

    sensor_id: int
    command: str
    requested: str
    aes_cipher: str | None = None


@dataclass(frozen=True, slots=True)
class ManagerCommand(Event):
    """manager_command (server): the command text the tool asked for (spec §12)."""

    command: str


@dataclass(frozen=True, slots=True)
class ReplyData(Event):
    """GUI reply bytes: server → GUI output of the task (re-encrypted as `aes:` + stream for AES GUIs);
    received by a GUI client as the decoded bytes."""

    data: bytes

    def __post_init__(self) -> None:
        _require(_is_bytes(self.data), "data must be bytes")


@dataclass(frozen=True, slots=True)
class ReplyEnd(Event):
    """GUI reply complete: the server finalises the AES stream (if any) and closes."""


@dataclass(frozen=True, slots=True)
class RawReply(Event):
    """Raw bytes to a GUI/tool, then close: `missing sniffer service - connect sensor?`, `timeout`, a `responses`
    output (raw even for AES GUIs), `unknown command: <cmd>`."""

    data: bytes

    def __post_init__(self) -> None:
        _require(_is_bytes(self.data), "data must be bytes")


@dataclass(frozen=True, slots=True)
class ActiveServices(Event):
    """manager_command `active` reply: `services` is a tuple of (ip, port, sensor_id)."""

    services: tuple[tuple[str, int, int], ...] = ()

    def __post_init__(self) -> None:
        _require(isinstance(self.services, tuple), "services must be a tuple")
        for item in self.services:
            _require(
                isinstance(item, tuple) and len(item) == 3 and _is_str(item[0]) and type(item[1]) is int
                and type(item[2]) is int,
                "each service is (ip: str, port: int, sensor_id: int)",
            )


# ------------------------------------------------------------------------------------------------------ keycheck


@dataclass(frozen=True, slots=True)
class KeycheckRequest(Event):
    """keycheck: client → server AES block with the licence-check input (spec §12)."""

    data: bytes

    def __post_init__(self) -> None:
        _require(_is_bytes(self.data), "data must be bytes")


@dataclass(frozen=True, slots=True)
class KeycheckReply(Event):
    """keycheck: server → client AES block with the script output or `error: <reason>`."""

    data: bytes

    def __post_init__(self) -> None:
        _require(_is_bytes(self.data), "data must be bytes")
