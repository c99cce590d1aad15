"""Harness bodies for the connection machines, every type in both roles (spec §6-§12).

The machine under test is wired to a real machine of the opposite role (the *peer*), and both are answered by
a scripted caller that behaves like the server or sensor code would (RsaKey after the opening, credentials
after the key, OK after a store message, a container decode after a packetbuffer block, ...). The fuzz input
is a script of *ops*, each injecting bytes into the machine under test:

* raw bytes, plain or AES blocks around a fuzzed payload (correct checksum, so the fuzzer gets past the
  framing), blocks with a wrong checksum, headers declaring up to 4 GiB, RSA blocks of any size;
* structured payloads: credentials JSON (RSA-encrypted with the machine's real key) or an opening line with
  one field replaced by a raw JSON fragment, compressed payloads and compression bombs, store messages,
  pcap_block_store containers with lying counts and offsets;
* the peer sending a valid event with a fuzzed body, EOF, and the clock moving (timers).

Invariants after every op: only wire errors escape; a RemoteProtocolError leaves the machine CLOSED, is raised
again by the next ``next_event`` and has an encodable reply; the block reader, opening reader and pre-key
stream buffers stay under their caps; one op cannot produce an unbounded number of events.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from vmproto.wire import events as ev
from vmproto.wire import pbstore, query_result, vmjson
from vmproto.wire._state import State
from vmproto.wire.compression import Compression, PbCompression, compress
from vmproto.wire.connection import Connection
from vmproto.wire.crypto import AesBlockCipher, rsa_encrypt, wrap_manager_request
from vmproto.wire.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from vmproto.wire.framing import HEADER_SIZE, byte_sum, encode_block
from vmproto.wire.gui import (
    MISSING_SERVICE,
    GuiCommandClient,
    GuiCommandServer,
    ManagerCommandClient,
    ManagerCommandServer,
    unknown_command,
)
from vmproto.wire.keycheck import KeycheckClient, KeycheckServer
from vmproto.wire.packetbuffer import PacketbufferClient, PacketbufferServer
from vmproto.wire.query import QueryClient, QueryServer
from vmproto.wire.response import ResponseClient, ResponsesClient, ResponseServer, ResponsesServer
from vmproto.wire.service import ServiceClient, ServiceServer
from vmproto.wire.store import StoreClient, StoreServer
from vmproto.wire.store_msg import StoreMessage

from .checks import CAPS, FuzzFinding, expect
from .codec_harnesses import CKEY, IVEC, MANAGER_KEY, NOW, PB_DECODE_LIMIT, PB_SIZE_CAP, build_container
from .keys import rsa_key
from .source import ByteSource

__all__ = ["MACHINE_HARNESSES", "Op", "PASSWORD", "machine_harness", "run_machine"]

PASSWORD = "pw"
MAX_OPS = 48
MAX_EVENTS_PER_OP = 5000
_CIPHER = AesBlockCipher(CKEY, IVEC)
_CIPHER_NAMES = ("aes-128-cbc", "aes-256-cbc", "aes-128-cfb", "aes-192-ofb", "AES128", "aesfoo")

_TYPES: dict[str, tuple[type[Connection], type[Connection]]] = {
    "service": (ServiceClient, ServiceServer),
    "store": (StoreClient, StoreServer),
    "query": (QueryClient, QueryServer),
    "packetbuffer block": (PacketbufferClient, PacketbufferServer),
    "responses": (ResponsesClient, ResponsesServer),
    "keycheck": (KeycheckClient, KeycheckServer),
    "response": (ResponseClient, ResponseServer),
    "gui_command": (GuiCommandClient, GuiCommandServer),
    "manager_command": (ManagerCommandClient, ManagerCommandServer),
}
_HANDSHAKE_TYPES = {"service", "store", "query", "packetbuffer block", "responses", "keycheck"}
_RSA_BITS = {"service": 2048, "packetbuffer block": 2048}


class Op:
    """Op codes of a machine script (one byte each, taken modulo the count)."""

    RAW, PLAIN, AES, BAD_SUM, BIG_HEADER, RSA, CREDENTIALS, OPENING, EOF, TIME, COMPRESSED, BOMB, CONTAINER, \
        STORE, PEER, RSA_KEY = range(16)
    COUNT = 16


def _opening_fields(ctype: str) -> dict[str, Any]:
    return {
        "response": {"gui_task_id": "1:2"},
        "gui_command": {"sensor_id": 2, "command": "listcalls"},
        "manager_command": {"command": "active"},
    }.get(ctype, {})


def _credentials_fields(ctype: str) -> dict[str, Any]:
    base: dict[str, Any] = {"password": PASSWORD, "aes_ckey": CKEY, "aes_ivec": IVEC}
    if ctype == "service":
        return {"sensor_id": 2, **base, "sensor_version": 2026004000, "check_ping_response": 1,
                "auto_parameters": 1, "compress_types": "gzip,zstd,lzo", "use_encode_data": 1}
    if ctype == "packetbuffer block":
        return {**base, "time": "", "sensor_id": 3, "sensor_name": "s"}
    return base


def _json_with_fragment(fields: dict[str, Any], which: int, fragment: bytes) -> bytes:
    """Compact JSON of ``fields`` with the value of field ``which`` replaced by the raw bytes ``fragment``
    (``which`` past the end: ``fragment`` is the whole text)."""
    keys = list(fields)
    if which > len(keys):
        return fragment
    if which == len(keys):
        return vmjson.dumps(fields)
    parts = []
    for i, key in enumerate(keys):
        value = fragment if i == which else vmjson.dumps(fields[key]) if not isinstance(fields[key], str) \
            else vmjson.dumps([fields[key]])[1:-1]
        parts.append(b'"' + key.encode() + b'":' + value)
    return b"{" + b",".join(parts) + b"}"


@functools.lru_cache(maxsize=32)
def _bomb(kind: int, size: int) -> bytes:
    return compress(Compression(kind), b"\0" * size)


class Rig:
    """The machine under test, its peer, the scripted callers on both sides, and a fake clock."""

    def __init__(self, ctype: str, role: str) -> None:
        client_cls, server_cls = _TYPES[ctype]
        self.ctype = ctype
        self.now = float(NOW)
        self.key_bits = _RSA_BITS.get(ctype, 1024)
        self.server = self._make_server(server_cls)
        self.client = self._make_client(client_cls)
        self.conn, self.peer = (self.server, self.client) if role == "server" else (self.client, self.server)
        self.attached = False  # does the peer hear what the machine under test writes?
        self.peer_failed = False
        self.stream_total = 0

    def _make_server(self, cls: type[Connection]) -> Connection:
        extra: dict[str, Any] = dict(CAPS)
        if self.ctype in _HANDSHAKE_TYPES:
            extra.update(rsa_key=rsa_key(self.key_bits), password=PASSWORD)
        if self.ctype in ("gui_command", "manager_command"):
            extra["manager_key"] = MANAGER_KEY
        return cls(**extra)

    def _make_client(self, cls: type[Connection]) -> Connection:
        extra: dict[str, Any] = dict(CAPS)
        if self.ctype == "response":
            extra.update(aes_ckey=CKEY, aes_ivec=IVEC)
        if self.ctype in ("gui_command", "manager_command"):
            extra["manager_key"] = MANAGER_KEY
        return cls(**extra)

    # ---------------------------------------------------------------------------------------- delivery
    def write(self, machine: Connection, data: bytes) -> None:
        """Bytes ``machine`` wrote: deliver them to the other side when it listens."""
        if not data:
            return
        if machine is self.conn:
            if self.attached and not self.peer_failed:
                self.feed(self.peer, data)
        else:
            self.feed(self.conn, data)

    def send(self, machine: Connection, event: ev.Event) -> bool:
        """Have ``machine`` send ``event`` as its caller would; False when the machine refuses it now."""
        try:
            data = machine.send(event, self.now)
        except LocalProtocolError:
            return False
        except RemoteProtocolError:
            # e.g. credentials for an RSA key the peer sent that is no key at all: the caller closes.
            return False
        self.write(machine, data)
        return True

    def feed(self, machine: Connection, data: bytes) -> None:
        """Hand bytes (b"" = EOF) to ``machine`` and run its caller on every event."""
        if machine is self.peer:
            try:
                machine.receive_data(data, self.now)
                self.drain(machine)
            except ProtocolError:
                self.peer_failed = True
            return
        self.last_read = len(data)
        try:
            machine.receive_data(data, self.now)
        except RemoteProtocolError as exc:
            self._check_failed(exc)
            return
        except LocalProtocolError:
            return  # data after EOF: our own misuse, reported as such
        self.drain(machine)

    def drain(self, machine: Connection) -> None:
        """Take events until NEED_DATA or close, answering each like the caller would."""
        for _ in range(MAX_EVENTS_PER_OP):
            try:
                event = machine.next_event(self.now)
            except RemoteProtocolError as exc:
                if machine is self.peer:
                    raise
                self._check_failed(exc)
                return
            if event is ev.NEED_DATA:
                self._check_buffers()
                return
            self.answer(machine, event)  # type: ignore[arg-type]
            if isinstance(event, ev.ConnectionClosed):
                return
        raise FuzzFinding("event-flood", f"{MAX_EVENTS_PER_OP} events without NEED_DATA")

    # ------------------------------------------------------------------------------------ invariants
    def _check_failed(self, exc: RemoteProtocolError) -> None:
        conn = self.conn
        expect(conn.state is State.CLOSED, "closed-after-error", f"{exc!r} left state {conn.state.name}")
        try:
            conn.next_event(self.now)
        except RemoteProtocolError as again:
            expect(again is exc, "sticky-error", f"{again!r} after {exc!r}")
        else:
            raise FuzzFinding("sticky-error", f"next_event after {exc!r} did not raise")
        try:
            conn.encode_reply(exc)
        except ProtocolError as bad:
            raise FuzzFinding("encode-reply", f"{exc!r} has no encodable reply: {bad!r}") from bad

    def _check_buffers(self) -> None:
        conn = self.conn
        cap = HEADER_SIZE + conn._max_block_payload
        expect(conn._blocks.buffered <= cap, "block-buffer", f"{conn._blocks.buffered} > {cap}")
        reader = getattr(conn, "_opening_reader", None) or getattr(conn, "_reader", None)
        if reader is not None:
            # The line is capped (spec §1.4); bytes after it in the same read (a response stream, §1.5) are data
            # the reader must keep, so the bound allows for the last read.
            limit = 2 * conn._opening_max + getattr(self, "last_read", 0)
            expect(reader.buffered <= limit, "opening-cap",
                   f"opening reader holds {reader.buffered} bytes, cap {conn._opening_max}")
        pending = getattr(conn, "_pending", None)
        if isinstance(pending, bytearray):
            expect(len(pending) <= conn._max_block_payload, "stream-buffer", f"{len(pending)} bytes before keys")

    # ------------------------------------------------------------------------------------ the callers
    def answer(self, machine: Connection, event: ev.Event) -> None:
        """What the sensor / central / GUI code does with ``event`` (never raises for a wire error)."""
        handler: Callable[[Connection, Any], None] | None = getattr(self, "_on_" + type(event).__name__, None)
        if handler is not None:
            handler(machine, event)

    def _on_OpenConnection(self, machine: Connection, event: ev.OpenConnection) -> None:  # noqa: N802
        if isinstance(machine, ResponseServer):
            self.send(machine, ev.ResponseKeys(CKEY, IVEC))
        elif hasattr(machine, "public_pem"):
            self.send(machine, ev.RsaKey(machine.public_pem))

    def _on_RsaKey(self, machine: Connection, event: ev.RsaKey) -> None:  # noqa: N802
        if isinstance(machine, ServiceClient):
            creds: ev.Event = ev.ServiceCredentials(2, PASSWORD, CKEY, IVEC, 2026004000, use_encode_data=True)
        elif isinstance(machine, PacketbufferClient):
            creds = ev.PacketbufferCredentials(PASSWORD, CKEY, IVEC, "", 3, "s")
        else:
            creds = ev.Credentials(PASSWORD, CKEY, IVEC)
        self.send(machine, creds)

    def _accept(self, machine: Connection, event: ev.Event) -> None:
        if isinstance(machine, ServiceServer):
            creds = machine.credentials
            params = machine.parameters() if creds is not None and creds.auto_parameters else None
            self.send(machine, ev.ServiceAccepted(params))
        elif isinstance(machine, StoreServer):
            self.send(machine, ev.StoreAccepted(True, True))
        else:
            self.send(machine, ev.HandshakeOK())

    _on_Credentials = _accept  # noqa: N815
    _on_PacketbufferCredentials = _accept  # noqa: N815
    _on_ServiceCredentials = _accept  # noqa: N815

    def _first_data(self, machine: Connection, event: ev.Event) -> None:
        if isinstance(machine, QueryClient):
            self.send(machine, ev.QueryRequest(b"select 1"))
        elif isinstance(machine, StoreClient):
            self.send(machine, ev.StoreQueries(StoreMessage(10, None, (b"insert into cdr values (1)",))))
        elif isinstance(machine, PacketbufferClient):
            container = pbstore.encode_container([(NOW, 0, b"\0" * 60)], counter=1)
            self.send(machine, ev.PacketbufferBlock(container))
        elif isinstance(machine, ResponsesClient):
            self.send(machine, ev.ResponseItem("1:2", b"output"))
        elif isinstance(machine, KeycheckClient):
            self.send(machine, ev.KeycheckRequest(b"key"))

    _on_HandshakeOK = _first_data  # noqa: N815
    _on_StoreAccepted = _first_data  # noqa: N815

    def _on_Ping(self, machine: Connection, event: ev.Ping) -> None:  # noqa: N802
        self.send(machine, ev.Pong())

    def _on_ChartPush(self, machine: Connection, event: ev.ChartPush) -> None:  # noqa: N802
        self.send(machine, ev.ChartReply("OK"))

    def _on_Rejected(self, machine: Connection, event: ev.Rejected) -> None:  # noqa: N802
        if event.reply is None:
            return
        for reply in (ev.ChartReply(event.reply), ev.BlockReply(event.reply), ev.ResponseReply(event.reply)):
            if self.send(machine, reply):
                return

    def _on_StoreQueries(self, machine: Connection, event: ev.StoreQueries) -> None:  # noqa: N802
        if len(event.message.queries) % 2:
            self.send(machine, ev.StoreOK())
        else:
            self.send(machine, ev.StoreError("sql queue is full", usleep=750000, quietly=True, keep_connect=True))

    def _on_StoreCheck(self, machine: Connection, event: ev.StoreCheck) -> None:  # noqa: N802
        self.send(machine, ev.StoreOK())

    def _on_QueryRequest(self, machine: Connection, event: ev.QueryRequest) -> None:  # noqa: N802
        self.send(machine, ev.QueryResponse(query_result.encode_json_result([("sql", 253)], [[event.sql[:64]]])))

    def _on_QueryResponse(self, machine: Connection, event: ev.QueryResponse) -> None:  # noqa: N802
        try:
            query_result.decode_result(event.payload)
        except RemoteProtocolError:
            pass

    def _on_PacketbufferBlock(self, machine: Connection, event: ev.PacketbufferBlock) -> None:  # noqa: N802
        # The central decodes every accepted container with its configured codec (snappy by default).
        header = pbstore.peek_header(event.payload)
        expect(header.size <= PB_SIZE_CAP, "pb-size-cap", f"machine accepted a {header.size}-byte area")
        if header.size <= PB_DECODE_LIMIT:
            try:
                container = pbstore.decode_container(event.payload, PbCompression.SNAPPY)
                for _ in container.iter_packets():
                    pass
            except RemoteProtocolError:
                pass
        if event.require_confirmation:
            self.send(machine, ev.BlockReply())

    def _on_ResponseItem(self, machine: Connection, event: ev.ResponseItem) -> None:  # noqa: N802
        self.send(machine, ev.ResponseReply("OK"))

    def _on_KeycheckRequest(self, machine: Connection, event: ev.KeycheckRequest) -> None:  # noqa: N802
        self.send(machine, ev.KeycheckReply(b"ok"))

    def _on_ResponseData(self, machine: Connection, event: ev.ResponseData) -> None:  # noqa: N802
        self.stream_total += len(event.data)

    def _on_GuiCommand(self, machine: Connection, event: ev.GuiCommand) -> None:  # noqa: N802
        if event.sensor_id % 2:
            self.send(machine, ev.RawReply(MISSING_SERVICE))
        else:
            self.send(machine, ev.ReplyData(event.command.encode("utf-8", "surrogateescape")))
            self.send(machine, ev.ReplyEnd())

    def _on_ManagerCommand(self, machine: Connection, event: ev.ManagerCommand) -> None:  # noqa: N802
        if event.command == "active":
            self.send(machine, ev.ActiveServices((("127.0.0.1", 5029, 2),)))
        else:
            self.send(machine, unknown_command(event.command))

    # ------------------------------------------------------------------------------------------ start
    def start(self, attached: bool) -> None:
        """Open the connection. ``attached``: the peer hears everything and the valid dialogue runs."""
        self.attached = attached
        client = self.client
        opening = ev.OpenConnection(self.ctype, _opening_fields(self.ctype))
        if client is self.conn:
            self.send(client, opening)
            if isinstance(client, ResponseClient):
                self.send(client, ev.ResponseData(b"task output"))
        elif attached:
            self.send(client, opening)


def _fragment(src: ByteSource) -> tuple[int, bytes]:
    return src.u8(), src.blob()


def run_op(rig: Rig, src: ByteSource) -> None:
    """Read one op from ``src`` and apply it to the machine under test."""
    op = src.u8() % Op.COUNT
    conn = rig.conn
    if op == Op.RAW:
        rig.feed(conn, src.blob())
    elif op == Op.PLAIN:
        rig.feed(conn, encode_block(src.blob()))
    elif op == Op.AES:
        payload = src.blob()
        rig.feed(conn, encode_block(_CIPHER.encrypt(payload), byte_sum(payload)))
    elif op == Op.BAD_SUM:
        delta, payload = src.u8() + 1, src.blob()
        body = _CIPHER.encrypt(payload) if delta & 1 else payload
        rig.feed(conn, encode_block(body, (byte_sum(payload) + delta) & 0xFFFFFFFF))
    elif op == Op.BIG_HEADER:
        length, tail = src.u32(), src.blob()
        rig.feed(conn, encode_block(b"")[:32] + length.to_bytes(4, "little") + src.u32().to_bytes(4, "little")
                 + tail)
    elif op == Op.RSA:
        size, payload = src.u16() % 1025, src.blob()
        rig.feed(conn, encode_block((payload * (size // max(1, len(payload)) + 1))[:size] if payload
                                    else b"\0" * size))
    elif op == Op.CREDENTIALS:
        which, fragment = _fragment(src)
        text = _json_with_fragment(_credentials_fields(rig.ctype), which, fragment)
        try:
            block = rsa_encrypt(_pem(rig), text)
        except LocalProtocolError:
            return  # longer than the key can carry: not a block a client could send
        rig.feed(conn, encode_block(block, byte_sum(text)))
    elif op == Op.OPENING:
        which, fragment = _fragment(src)
        fields = {"type_connection": rig.ctype, **_opening_fields(rig.ctype)}
        line = _json_with_fragment(fields, which, fragment)
        if src.boolean():
            try:
                rig.feed(conn, wrap_manager_request(line, MANAGER_KEY, src.pick(_CIPHER_NAMES)))
            except LocalProtocolError:
                return
        else:
            rig.feed(conn, line + b"\r\n")
    elif op == Op.EOF:
        rig.feed(conn, b"")
    elif op == Op.TIME:
        rig.now += src.u16() / 4
        deadline = conn.get_timer()
        if deadline is not None and deadline <= rig.now:
            try:
                data = conn.handle_timer(rig.now)
            except RemoteProtocolError as exc:
                rig._check_failed(exc)
                return
            rig.write(conn, data)
            rig.drain(conn)
    elif op == Op.COMPRESSED:
        kind, payload = src.u8() % 4, src.blob()
        _feed_payload(rig, src.boolean(), compress(Compression(kind), payload))
    elif op == Op.BOMB:
        kind, size = 1 + src.u8() % 3, src.pick((CAPS["max_decompressed"], CAPS["max_decompressed"] + 1,
                                                 8 * CAPS["max_decompressed"]))
        body = _bomb(kind, size)
        prefix = b"rch:" if isinstance(conn, ServiceClient) else b""
        _feed_payload(rig, src.boolean(), prefix + body)
    elif op == Op.CONTAINER:
        _feed_payload(rig, True, build_container(src))
    elif op == Op.STORE:
        kind, head, body = src.u8() % 4, src.blob()[:40], src.blob()
        _feed_payload(rig, True, compress(Compression(kind), head + b"|" + body))
    elif op == Op.PEER:
        _peer_event(rig, src)
    elif op == Op.RSA_KEY:
        which, fragment = _fragment(src)
        fields = {"rsa_key": src.pick((_pem(rig), _other_pem(rig), b"-----BEGIN PUBLIC KEY-----\nAAAA\n"))
                  .decode("ascii")}
        rig.feed(conn, encode_block(_json_with_fragment(fields, which, fragment)))


def _other_pem(rig: Rig) -> bytes:
    """A valid SPKI PEM that is not the server's key (a substituted key, spec §17.3)."""
    from .keys import rsa_pem

    return rsa_pem(2048 if rig.key_bits == 1024 else 1024)


def _pem(rig: Rig) -> bytes:
    from .keys import rsa_pem

    return rsa_pem(rig.key_bits)


def _feed_payload(rig: Rig, aes: bool, payload: bytes) -> None:
    body = _CIPHER.encrypt(payload) if aes else payload
    rig.feed(rig.conn, encode_block(body, byte_sum(payload)))


def _peer_event(rig: Rig, src: ByteSource) -> None:
    """The peer sends a valid event of its role with a fuzzed body (skipped when the peer cannot now)."""
    if not rig.attached or rig.peer_failed:
        return
    choice, body = src.u8(), src.blob()
    text = body.decode("utf-8", "replace")
    peer = rig.peer
    makers: list[Callable[[], ev.Event]]
    if peer is rig.client:
        makers = [
            lambda: ev.QueryRequest(body or b"x", csv=bool(choice & 0x80)), ev.End, ev.StoreCheck,
            lambda: ev.StoreQueries(StoreMessage(choice, None, (body,), batched=bool(choice & 0x80))),
            lambda: ev.ResponseItem(text.split("#")[0] or "1", body), lambda: ev.KeycheckRequest(body),
            ev.Pong, ev.Stop, lambda: ev.ChartReply(text), lambda: ev.ResponseData(body), ev.ResponseEnd,
            lambda: ev.PacketbufferBlock(_container_from(body)),
        ]
    else:
        makers = [
            lambda: ev.QueryResponse(body, error=bool(choice & 0x80)), ev.StoreOK,
            lambda: ev.StoreError(text or "error", usleep=choice), lambda: ev.BlockReply(text or "OK"),
            lambda: ev.ResponseReply(text or "OK"), lambda: ev.KeycheckReply(body), ev.Ping,
            lambda: ev.Task(str(choice), body), lambda: ev.ChartPush(body), lambda: ev.RawReply(body),
            lambda: ev.ReplyData(body), ev.ReplyEnd,
        ]
    try:
        event = makers[choice % len(makers)]()
    except LocalProtocolError:
        return  # the body does not make a valid event of that kind (e.g. an empty chart push)
    rig.send(peer, event)


def _container_from(body: bytes) -> bytes:
    """A valid container carrying ``body`` as its one packet (raises LocalProtocolError when it cannot)."""
    return pbstore.encode_container([(NOW, 0, body[:1500])], counter=1 + (body[0] if body else 0))


def run_machine(ctype: str, role: str, data: bytes) -> Rig:
    """Run one machine script: the start mode from the first byte, then up to :data:`MAX_OPS` ops."""
    src = ByteSource(data)
    rig = Rig(ctype, role)
    rig.start(attached=src.boolean())
    for _ in range(MAX_OPS):
        if not src.remaining:
            break
        run_op(rig, src)
    return rig


def machine_harness(ctype: str, role: str) -> Callable[[bytes], None]:
    """The harness body for one machine."""

    def harness(data: bytes) -> None:
        run_machine(ctype, role, data)

    harness.__name__ = f"conn_{ctype.replace(' ', '_')}_{role}"
    harness.__doc__ = f"{ctype} {role} machine driven by a script of framed and structured ops."
    return harness


MACHINE_HARNESSES: dict[str, Callable[[bytes], None]] = {}
for _ctype in _TYPES:
    for _role in ("server", "client"):
        _h = machine_harness(_ctype, _role)
        MACHINE_HARNESSES[_h.__name__] = _h
