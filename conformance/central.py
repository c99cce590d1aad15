"""The suite's own central for sensor mode: a raw-byte listener that a case scripts.

It plays every connection type a sensor opens (spec §1.2) with the central's side of the dialogue written from
the spec text, records everything the sensor sends (opening lines, credentials exactly as decrypted, store
messages, packetbuffer containers, query requests, task responses) and lets the case change its answers:
refuse a handshake, answer `queue is full`, drop a connection, withhold pings, push tasks. From `vmproto.wire` it
only borrows codecs (RSA/AES primitives, JSON dialect, compression); it never uses the connection machines.

Anything a sensor writes that breaks a writer rule (block header, checksum, AES, opening line grammar) is recorded
in `violations`; the cases fail on them through `SensorSession.check_clean()`.
"""

from __future__ import annotations

import functools
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from vmproto.wire import vmjson
from vmproto.wire.compression import Compression, compress, decompress, detect
from vmproto.wire.crypto import AesStreamDecryptor, generate_rsa_key, public_key_pem, rsa_decrypt
from vmproto.wire.errors import ProtocolError
from vmproto.wire.framing import byte_sum

from .model import CaseFailed
from .wirekit import NoReply, PeerClosed, Wire

__all__ = [
    "RSA_BITS",
    "Central",
    "Conn",
    "PbBlock",
    "Script",
    "StoreMsg",
    "TaskResult",
    "parse_store_text",
    "service_params",
]

# spec §1.2 / §3.1: key size per type
RSA_BITS = {"service": 4096, "store": 2048, "packetbuffer block": 2048, "query": 2048, "responses": 2048,
            "keycheck": 2048}
KNOWN_TYPES = (*RSA_BITS, "response")
STORE_OK_JSON = b'{"rslt":"OK","check_store":1,"check_time":1}'
_TIME = re.compile(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_L_ITEM = re.compile(rb"L(\d+):")


@functools.cache
def _rsa_key(bits: int) -> Any:
    # One key per size and process: generating 4096-bit keys per connection would dominate the run time, and a
    # central may legitimately keep a key pool (spec §6.1).
    return generate_rsa_key(bits)


async def rsa_key(bits: int) -> Any:
    """The cached private key of `bits` (generated in a worker thread the first time)."""
    return await trio.to_thread.run_sync(_rsa_key, bits)


def service_params(*, concat_limit: int | None = 1000, type_compress: int = 3, responses: bool = True) -> bytes:
    """The §7.4 result JSON in the central's member order."""
    out = b'{"result":"OK"'
    if concat_limit:
        out += b',"mysql_concat_limit":%d' % concat_limit
    out += b',"type_compress":%d,"type_compress_query":%d,"type_compress_store":%d' % ((type_compress,) * 3)
    if responses:
        out += b',"enable_responses_sender":1'
    return out + b"}"


@dataclass
class StoreMsg:
    """One store data message or `check` as received (after AES; `text` after decompression)."""

    conn: int
    at: float
    payload: bytes
    codec: Compression
    text: bytes = b""
    is_check: bool = False
    id_main: int = -1
    time_part: bytes | None = None
    body: bytes = b""
    items: tuple[bytes, ...] = ()
    batched: bool = False
    error: str = ""

    @property
    def message_key(self) -> tuple[int, bytes]:
        """What must stay byte-identical across resends: id_main and the body after the time part."""
        return self.id_main, self.body


def parse_store_text(text: bytes) -> tuple[int, bytes | None, bytes, tuple[bytes, ...], bool]:
    """Parse a decompressed store message strictly per spec §8.3.

    Returns (id_main, time_part datetime or None, body, units, batched). Raises ValueError naming the defect.
    """
    head, sep, rest = text.partition(b"|")
    if not sep or not head.isdigit() or not head.isascii():
        raise ValueError("id-main is not digits followed by `|`")
    time_part = None
    if rest[:1] == b"T" and rest[1:2].isdigit():
        if len(rest) < 21 or rest[20:21] != b"|" or not _TIME.fullmatch(rest[1:20]):
            raise ValueError(f"bad time-part {rest[:24]!r}")
        time_part, rest = rest[1:20], rest[21:]
    if not (rest[:1] == b"L" and rest[1:2].isdigit()):
        return int(head), time_part, rest, (rest,), False
    items: list[bytes] = []
    pos = 0
    while pos < len(rest):
        m = _L_ITEM.match(rest, pos)
        if m is None:
            raise ValueError(f"bad l-item at byte {pos}: {rest[pos:pos + 16]!r}")
        n = int(m.group(1))
        start = m.end()
        if start + n + 1 > len(rest) or rest[start + n:start + n + 1] != b"\n":
            raise ValueError(f"l-item {len(items) + 1}: length {n} not followed by LF")
        items.append(rest[start:start + n])
        pos = start + n + 1
    if len(items) < 2:
        raise ValueError("an L-batch must hold at least 2 items (spec §8.3 body = single / 2*l-item)")
    return int(head), time_part, rest, tuple(items), True


@dataclass
class PbBlock:
    """One packetbuffer container as received (decrypted), with its header fields (spec §9.2)."""

    conn: int
    at: float
    payload: bytes

    def u32(self, off: int) -> int:
        return struct.unpack_from("<I", self.payload, off)[0]

    @property
    def fields(self) -> dict[str, Any]:
        """Header fields by the §9.2 names (raises struct.error for a payload under 64 bytes)."""
        p = self.payload
        return {
            "title": p[0:16], "version": p[16], "pad17": p[17:20], "size": self.u32(20),
            "size_compress": self.u32(24), "count": self.u32(28), "dlink": struct.unpack_from("<H", p, 32)[0],
            "sensor_id": struct.unpack_from("<h", p, 34)[0], "ifname": p[36:46], "hm": p[46], "pad47": p[47:48],
            "checksum": self.u32(48), "counter": self.u32(52), "require_confirmation": p[56], "pad57": p[57:60],
            "time_s": self.u32(60),
        }


@dataclass
class TaskResult:
    """Output of one pushed task as it came back on `response` (stream) or `responses` (item)."""

    task_id: str
    path: str  # "response" or "responses"
    output: bytes
    at: float
    conn: int
    line: bytes = b""
    error: str = ""


@dataclass
class Conn:
    """One accepted connection and what it carried."""

    index: int
    local: tuple[str, int]
    accepted_at: float
    wire: Wire
    line: bytes = b""
    kind: str = ""
    opening: dict[str, Any] | None = None
    creds_text: bytes | None = None
    creds: dict[str, Any] | None = None
    result: bytes | None = None
    closed_at: float | None = None
    pongs: list[tuple[float, bytes]] = field(default_factory=list)  # (latency, reply payload) per ping
    unsolicited: list[bytes] = field(default_factory=list)
    end: str = ""  # how it ended: "eof", "reset", "closed by central", ...

    @property
    def accepted(self) -> bool:
        """True when the central accepted the handshake."""
        return self.result is not None and (self.result == b"OK" or self.result.startswith(b'{"r'))


# A reply policy gets (message or block, its 1-based number of that kind) and returns the reply payload, or None to
# close the connection without a reply.
StoreReply = Callable[[StoreMsg, int], bytes | None]
PbReply = Callable[[PbBlock, int], bytes | None]


def _ok_store(_msg: StoreMsg, _n: int) -> bytes | None:
    return b"OK"


def _ok_pb(_blk: PbBlock, _n: int) -> bytes | None:
    return b"OK"


@dataclass
class Script:
    """How the suite central answers; cases change fields before or during a run."""

    password: str
    # service (spec §7)
    service_result: Callable[[Conn, int], bytes] | None = None  # (conn, n-th service handshake) -> reply
    concat_limit: int | None = 1000
    type_compress: int = 3
    responses_enabled: bool = True
    plain_ok: bool = False
    pings: bool = True
    first_ping: float = 0.1
    ping_interval: float = 5.0
    pong_wait: float = 5.0
    # store (spec §8)
    store_result: bytes = STORE_OK_JSON
    store_reply: StoreReply = _ok_store
    check_reply: Callable[[StoreMsg, int], bytes | None] = _ok_store
    # packetbuffer (spec §9)
    pb_result: Callable[[Conn, int], bytes] | None = None
    pb_reply: PbReply = _ok_pb
    max_time_diff: float = 2.0
    # query (spec §10): JSON result for any request
    query_reply: bytes = b'{"result":"OK"}'
    # responses (spec §11.2)
    responses_reply: bytes = b"OK"


class Central:
    """A scripted central on one or more listening addresses. Use `async with Central(...)` inside a nursery-owning
    task: `listen()` binds, `serve(nursery)` accepts until the case ends."""

    def __init__(self, script: Script, *, scale: float = 1.0) -> None:
        self.script = script
        self.scale = scale
        self.conns: list[Conn] = []
        self.store_msgs: list[StoreMsg] = []
        self.pb_blocks: list[PbBlock] = []
        self.queries: list[tuple[int, bytes, Compression]] = []
        self.tasks: dict[str, TaskResult] = {}
        self.violations: list[str] = []
        self.listeners: dict[tuple[str, int], trio.SocketListener] = {}
        self._nursery: trio.Nursery | None = None
        self._service: Conn | None = None
        self._push: trio.MemorySendChannel[bytes] | None = None
        self._counter = 0
        self._handshakes: dict[str, int] = {}
        self._data_counts: dict[str, int] = {}
        self._drop_scope: trio.CancelScope | None = None
        self._scopes: dict[tuple[str, int], trio.CancelScope] = {}

    # --- listening ----------------------------------------------------------------------------------------------
    async def listen(self, nursery: trio.Nursery, host: str, port: int) -> int:
        """Bind host:port (port 0: any free one) and accept there until `close_listener` or the nursery ends.
        Returns the port. Raises CaseFailed when the address cannot be bound."""
        self._nursery = nursery
        try:
            [listener] = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:
            raise CaseFailed(f"suite central cannot listen on {host}:{port}: {exc}") from None
        bound = listener.socket.getsockname()[1]
        self.listeners[(host, bound)] = listener
        scope = trio.CancelScope()
        self._scopes[(host, bound)] = scope

        async def accept_loop() -> None:
            with scope:
                async with listener:
                    while True:
                        stream = await listener.accept()
                        nursery.start_soon(self._handle, stream, (host, bound))

        nursery.start_soon(accept_loop)
        return bound

    async def listen_again(self, host: str, port: int) -> int:
        """Start listening on one more address, in the nursery of the first `listen`. Returns the port."""
        if self._nursery is None:
            raise RuntimeError("listen() first")
        return await self.listen(self._nursery, host, port)

    async def close_listener(self, host: str, port: int) -> None:
        """Stop accepting on host:port (the address refuses connections from now on)."""
        scope = self._scopes.pop((host, port), None)
        self.listeners.pop((host, port), None)
        if scope is not None:
            scope.cancel()
        await trio.sleep(0)

    def t(self, seconds: float) -> float:
        return seconds * self.scale

    # --- per connection -----------------------------------------------------------------------------------------
    async def _handle(self, stream: trio.SocketStream, local: tuple[str, int]) -> None:
        wire = Wire(stream, "sensor")
        conn = Conn(len(self.conns), local, trio.current_time(), wire)
        self.conns.append(conn)
        try:
            await self._dispatch(conn)
            conn.end = conn.end or "closed by central"
        except PeerClosed:
            conn.end = "reset" if wire.reset else "eof"
        except NoReply as exc:
            conn.end = f"timeout: {exc}"
        except CaseFailed as exc:
            self.violations.append(f"connection {conn.index} ({conn.kind or '?'}): {exc}")
            conn.end = f"violation: {exc}"
        except trio.Cancelled:
            conn.end = conn.end or "run ended"
            raise
        finally:
            conn.closed_at = trio.current_time()
            with trio.CancelScope(shield=True):
                await wire.aclose()

    async def _read_line(self, conn: Conn) -> None:
        wire = conn.wire
        with trio.move_on_after(self.t(30) + 5):
            while b"\r\n" not in wire._buf:  # noqa: SLF001 - the raw line precedes any block
                if not await wire._fill():  # noqa: SLF001
                    conn.line = bytes(wire._buf)  # noqa: SLF001
                    raise PeerClosed("closed before the opening line ended")
                if len(wire._buf) > 65536:  # noqa: SLF001
                    raise CaseFailed("opening line longer than 64 KiB")
            buf = bytes(wire._buf)  # noqa: SLF001
            end = buf.index(b"\r\n") + 2
            conn.line = buf[:end]
            del wire._buf[:end]  # noqa: SLF001
            try:
                conn.opening = vmjson.loads(conn.line[:-2])
            except ProtocolError as exc:
                raise CaseFailed(f"opening line is not JSON: {conn.line[:80]!r} ({exc})") from None
            if not isinstance(conn.opening, dict):
                raise CaseFailed(f"opening line is not a JSON object: {conn.line[:80]!r}")
            conn.kind = str(conn.opening.get("type_connection", ""))
            return
        raise NoReply("no opening line within 30 s")

    async def _dispatch(self, conn: Conn) -> None:
        await self._read_line(conn)
        handler = {"service": self._service_conn, "store": self._store_conn, "packetbuffer block": self._pb_conn,
                   "query": self._query_conn, "responses": self._responses_conn,
                   "response": self._response_conn}.get(conn.kind)
        if handler is None:
            self.violations.append(f"connection {conn.index}: unknown type_connection {conn.kind!r}")
            return
        await handler(conn)

    async def _handshake(self, conn: Conn) -> int:
        """Send rsa_key, read and decrypt the credentials (spec §6.1, §3.3). Returns the handshake number of this
        type (1-based). Raises CaseFailed for an unreadable credentials block."""
        bits = RSA_BITS[conn.kind]
        key = await rsa_key(bits)
        pem = public_key_pem(key)
        await conn.wire.send_plain(vmjson.dumps({"rsa_key": pem.decode("ascii")}))
        blk = await conn.wire.read_block(self.t(300), "the credentials block")
        try:
            plain = rsa_decrypt(key, blk.payload)
        except ProtocolError:
            raise CaseFailed(f"credentials block does not RSA-decrypt with the {bits}-bit key "
                             f"(length {blk.length})") from None
        if byte_sum(plain) != blk.checksum:
            raise CaseFailed(f"credentials block: sum {blk.checksum} is not the sum of the plaintext "
                             f"({byte_sum(plain)}, spec §3.3)")
        conn.creds_text = plain
        try:
            creds = vmjson.loads(plain)
        except ProtocolError as exc:
            raise CaseFailed(f"credentials are not JSON: {plain[:80]!r} ({exc})") from None
        if not isinstance(creds, dict):
            raise CaseFailed(f"credentials are not a JSON object: {plain[:80]!r}")
        conn.creds = creds
        ckey, ivec = creds.get("aes_ckey"), creds.get("aes_ivec")
        if isinstance(ckey, str) and isinstance(ivec, str) and len(ckey) >= 16 and len(ivec) >= 16:
            conn.wire.install_keys(ckey, ivec)
        n = self._handshakes[conn.kind] = self._handshakes.get(conn.kind, 0) + 1
        return n

    async def _result(self, conn: Conn, reply: bytes) -> bool:
        conn.result = reply
        await conn.wire.send_plain(reply)
        return conn.accepted

    def _password_ok(self, conn: Conn) -> bool:
        return conn.creds is not None and conn.creds.get("password") == self.script.password

    # service --------------------------------------------------------------------------------------------------
    async def _service_conn(self, conn: Conn) -> None:
        n = await self._handshake(conn)
        s = self.script
        if s.service_result is not None:
            reply = s.service_result(conn, n)
        elif not self._password_ok(conn):
            reply = b"bad password"
        elif s.plain_ok:
            reply = b"OK"
        else:
            reply = service_params(concat_limit=s.concat_limit, type_compress=s.type_compress,
                                   responses=s.responses_enabled)
        if not await self._result(conn, reply):
            return
        self._service = conn
        send, receive = trio.open_memory_channel[bytes](100)
        self._push = send
        try:
            # No nursery here: an error of the loop must reach _handle as itself, not inside an ExceptionGroup.
            with trio.CancelScope() as scope:
                self._drop_scope = scope
                await self._service_loop(conn, receive)
            if scope.cancelled_caught:
                conn.end = "dropped by the suite"
        finally:
            if self._service is conn:
                self._service = None
                self._push = None
                self._drop_scope = None

    async def _service_loop(self, conn: Conn, pushes: trio.MemoryReceiveChannel[bytes]) -> None:
        s = self.script
        wire = conn.wire
        next_ping = trio.current_time() + self.t(s.first_ping)
        while True:
            # Unsolicited bytes and pushes until the next ping is due (spec §7.5 steps 1-2).
            wait = next_ping - trio.current_time() if s.pings else 3600.0
            with trio.move_on_after(max(wait, 0)):
                while True:
                    got_push = False
                    with trio.move_on_after(0.05):
                        payload = await pushes.receive()
                        got_push = True
                    if got_push and payload == b"ping":
                        break  # a ping asked for by the case: send it now
                    if got_push:
                        await wire.send_plain(payload)
                        next_ping = trio.current_time() + self.t(s.ping_interval)
                        continue
                    with trio.move_on_after(0.05):
                        if not await wire._fill():  # noqa: SLF001
                            conn.end = "reset" if wire.reset else "eof"
                            return
                    extra = wire.take_buffer()
                    if extra:
                        conn.unsolicited.append(extra)
            await wire.send_plain(b"ping")
            sent = trio.current_time()
            try:
                reply = await wire.read_plain(self.t(s.pong_wait), "the reply to ping")
            except NoReply:
                conn.pongs.append((trio.current_time() - sent, b""))
                conn.end = "no pong"
                return
            conn.pongs.append((trio.current_time() - sent, reply))
            if reply != b"pong":
                conn.end = f"ping answered {reply[:20]!r}"
                return
            next_ping = trio.current_time() + self.t(s.ping_interval)

    @property
    def service(self) -> Conn | None:
        """The live (accepted) service connection, if any."""
        return self._service

    def push_task(self, command: str) -> str:
        """Queue `<task-id>/<command>` on the live service connection (spec §7.5). Returns the task id.
        Raises CaseFailed when no service connection is up."""
        if self._push is None:
            raise CaseFailed("no service connection to push a task on")
        self._counter += 1
        task_id = f"{int(time.time() * 1_000_000)}:{self._counter}"
        self._push.send_nowait(f"{task_id}/{command}".encode())
        return task_id

    def ping_now(self) -> None:
        """Send a `ping` on the live service connection at once (and wait for its reply as usual).
        Raises CaseFailed when no service connection is up."""
        if self._push is None:
            raise CaseFailed("no service connection to ping")
        self._push.send_nowait(b"ping")

    def drop_service(self) -> None:
        """Close the live service connection (as a central crash or restart would)."""
        if self._drop_scope is not None:
            self._drop_scope.cancel()

    # store ----------------------------------------------------------------------------------------------------
    async def _store_conn(self, conn: Conn) -> None:
        await self._handshake(conn)
        reply = self.script.store_result if self._password_ok(conn) else b"bad password"
        if not await self._result(conn, reply):
            return
        while True:
            try:
                payload = await conn.wire.read_aes(self.t(300), "a store message")
            except PeerClosed:
                conn.end = "reset" if conn.wire.reset else "eof"
                return
            msg = StoreMsg(conn.index, trio.current_time(), payload, detect(payload))
            if payload == b"check":
                msg.is_check = True
                self.store_msgs.append(msg)
                n = self._count("check")
                answer = self.script.check_reply(msg, n)
            else:
                try:
                    _kind, msg.text = decompress(payload)
                    msg.id_main, msg.time_part, msg.body, msg.items, msg.batched = parse_store_text(msg.text)
                except (ProtocolError, ValueError) as exc:
                    msg.error = str(exc)
                    self.violations.append(f"store message on connection {conn.index} breaks spec §8.3/§5: "
                                           f"{exc}: {payload[:48]!r}")
                self.store_msgs.append(msg)
                answer = self.script.store_reply(msg, self._count("store"))
            if answer is None:
                conn.end = "closed by central without reply"
                return
            await conn.wire.send_aes(answer)
            if answer.startswith(b'{"error":"client time'):
                return  # spec §8.5 step 5: the time error closes the connection

    def _count(self, what: str) -> int:
        n = self._data_counts[what] = self._data_counts.get(what, 0) + 1
        return n

    # packetbuffer ---------------------------------------------------------------------------------------------
    async def _pb_conn(self, conn: Conn) -> None:
        n = await self._handshake(conn)
        s = self.script
        if s.pb_result is not None:
            reply = s.pb_result(conn, n)
        elif not self._password_ok(conn):
            reply = b"bad password"
        else:
            reply = b"OK" if _time_ok(conn.creds or {}, s.max_time_diff) else b"bad time"
        if not await self._result(conn, reply):
            return
        while True:
            try:
                payload = await conn.wire.read_aes(self.t(300), "a packetbuffer container")
            except PeerClosed:
                conn.end = "reset" if conn.wire.reset else "eof"
                return
            blk = PbBlock(conn.index, trio.current_time(), payload)
            self.pb_blocks.append(blk)
            answer = s.pb_reply(blk, self._count("pb"))
            if len(payload) >= 64 and payload[56] == 0:
                continue  # no confirmation asked: the central never replies (spec §9.9)
            if answer is None:
                conn.end = "closed by central without reply"
                return
            await conn.wire.send_aes(answer)

    # query ----------------------------------------------------------------------------------------------------
    async def _query_conn(self, conn: Conn) -> None:
        await self._handshake(conn)
        if not await self._result(conn, b"OK" if self._password_ok(conn) else b"bad password"):
            return
        while True:
            try:
                payload = await conn.wire.read_aes(self.t(60), "a query request")
            except PeerClosed:
                conn.end = "reset" if conn.wire.reset else "eof"
                return
            codec = detect(payload)
            self.queries.append((conn.index, payload, codec))
            if payload == b"_END_":
                return
            try:
                _kind, text = decompress(payload)
            except ProtocolError as exc:
                raise CaseFailed(f"query request does not decompress: {exc}") from None
            if text == b"_END_":
                return
            reply = self.script.query_reply
            await conn.wire.send_aes(compress(codec, reply) if codec is not Compression.NONE else reply)

    # responses / response -------------------------------------------------------------------------------------
    async def _responses_conn(self, conn: Conn) -> None:
        await self._handshake(conn)
        if not await self._result(conn, b"OK" if self._password_ok(conn) else b"bad password"):
            return
        while True:
            try:
                payload = await conn.wire.read_aes(self.t(300), "a responses item")
            except PeerClosed:
                conn.end = "reset" if conn.wire.reset else "eof"
                return
            task_id, sep, output = payload.partition(b"#")
            if sep:
                self.tasks[task_id.decode("latin-1")] = TaskResult(task_id.decode("latin-1"), "responses", output,
                                                                   trio.current_time(), conn.index)
            await conn.wire.send_aes(self.script.responses_reply if sep else b"missing gui task id")

    async def _response_conn(self, conn: Conn) -> None:
        task_id = str((conn.opening or {}).get("gui_task_id", ""))
        result = TaskResult(task_id, "response", b"", trio.current_time(), conn.index, conn.line)
        svc = self._service or next((c for c in reversed(self.conns) if c.kind == "service" and c.accepted), None)
        data = await conn.wire.read_until_eof(self.t(300), "the end of the response stream")
        data = conn.wire.take_buffer() + data if not data else data
        if svc is None or svc.creds is None:
            result.error = "no service keys known for the response"
        else:
            try:
                ckey = svc.creds["aes_ckey"].encode("utf-8", "surrogateescape")[:16]
                ivec = svc.creds["aes_ivec"].encode("utf-8", "surrogateescape")[:16]
                dec = AesStreamDecryptor(ckey, ivec)
                result.output = dec.update(data) + dec.finalize()
            except (ProtocolError, KeyError, ValueError) as exc:
                result.error = f"response stream does not decrypt with the service keys: {exc}"
        result.at = trio.current_time()
        conn.end = "eof"
        self.tasks[task_id] = result

    # --- queries for cases --------------------------------------------------------------------------------------
    def of(self, kind: str) -> list[Conn]:
        """Connections of one type, in accept order."""
        return [c for c in self.conns if c.kind == kind]

    def data_msgs(self) -> list[StoreMsg]:
        """Store data messages (no `check`), in arrival order."""
        return [m for m in self.store_msgs if not m.is_check]


def _time_ok(creds: dict[str, Any], max_diff: float) -> bool:
    """spec §6.4: |now − time| mod 1800 ≤ max_diff, the time read as local time."""
    text = creds.get("time")
    if not isinstance(text, str) or not text:
        return not text
    try:
        t = time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        return False
    return abs(time.time() - t) % 1800 <= max_diff + 1  # +1: the text has whole seconds

