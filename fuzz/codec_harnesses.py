"""Harness bodies for the codecs of the wire core: framing, opening line, AES, compression, JSON, store
messages, query results and pcap_block_store containers.

Each harness takes one input (``bytes``), raises nothing for wire errors, and raises the code's own exception
or a :class:`fuzz.checks.FuzzFinding` when something is wrong. The first bytes choose parameters; the rest is
fed as it is, so a mutating fuzzer works directly on the wire bytes.
"""

from __future__ import annotations

import struct
from typing import Any

from vmproto.wire import pbstore, query_result, store_msg, vmjson
from vmproto.wire.acceptor import Acceptor
from vmproto.wire.compression import Compression, PbCompression, decompress, detect, pb_decompress
from vmproto.wire.crypto import (
    AesBlockCipher,
    AesStreamDecryptor,
    ManagerAesKey,
    unwrap_manager_request,
)
from vmproto.wire.errors import ProtocolError, RemoteProtocolError
from vmproto.wire.framing import HEADER_SIZE, BlockReader, verify_checksum
from vmproto.wire.opening import CONNECTION_TYPES

from .checks import CAPS, expect, wire_errors_only
from .source import ByteSource

__all__ = [
    "CKEY",
    "IVEC",
    "MANAGER_KEY",
    "NOW",
    "PB_DECODE_LIMIT",
    "PB_SIZE_CAP",
    "aes",
    "block_reader",
    "decompress_any",
    "opening",
    "pbstore_container",
    "query_result_decode",
    "pieces",
    "read_cuts",
    "store_message",
    "vmjson_loads",
]

CKEY = "0123456789:;<=>?@ABCDEFGHIJKLMNO"
IVEC = "PQRSTUVWXYZ[]^_`"
MANAGER_KEY = ManagerAesKey(b"manager-key-0123", b"manager-iv-45678")
NOW = 1_800_000_000
# spec §9.8 row 10: a vmproto central refuses a container whose uncompressed area is over 256 MiB.
PB_SIZE_CAP = 256 * 1024 * 1024
# Containers that passed validation are decoded only up to this size in the fuzz loop (a 256 MiB area is
# legal but would make every iteration slow; the cap itself is what is checked above it).
PB_DECODE_LIMIT = 16 * 1024 * 1024
_CIPHER_NAMES = ("aes-128-cbc", "aes-256-cbc", "aes-128-ecb", "aes-192-cfb", "aes-128-ofb", "aes-256-ctr",
                 "AES128", "aes-128-cfb8", "nonsense", "")


def read_cuts(src: ByteSource) -> list[int]:
    """Read up to 7 raw cut points (u16 each): where the stream read later is split into reads."""
    return [src.u16() for _ in range(src.u8() % 8)]


def pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    """Split ``stream`` at ``cuts`` (taken modulo its length): the reads a peer's bytes arrive in."""
    points = sorted({c % (len(stream) + 1) for c in cuts})
    bounds = [0, *points, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


# -------------------------------------------------------------------------------------------- framing


def block_reader(data: bytes) -> None:
    """BlockReader over a stream split at fuzzed points: only wire errors, frames exactly as declared, the
    buffer under ``HEADER_SIZE + max_payload`` whenever it asks for more, a failed reader stays failed."""
    src = ByteSource(data)
    max_payload = src.pick((0, 16, 1024, CAPS["max_block_payload"]))
    cuts = read_cuts(src)
    stream = src.rest()
    reader = BlockReader(max_payload)
    taken = 0
    try:
        for piece in pieces(stream, cuts):
            reader.receive_data(piece)
            while (got := reader.next_block()) is not None:
                header, payload = got
                expect(len(payload) == header.length, "frame-length", f"{len(payload)} != {header.length}")
                expect(header.length <= max_payload, "frame-cap", f"{header.length} > {max_payload}")
                taken += HEADER_SIZE + len(payload)
                wire_errors_only(lambda h=header, p=payload: verify_checksum(h, p))
            expect(reader.buffered < HEADER_SIZE + max_payload, "buffer-cap",
                   f"{reader.buffered} bytes buffered with max_payload {max_payload}")
            expect(taken + reader.buffered <= len(stream), "frame-accounting", "more bytes out than in")
    except RemoteProtocolError as exc:
        # A failed reader keeps failing with the same error and holds nothing.
        try:
            reader.next_block()
        except RemoteProtocolError as again:
            expect(again is exc, "sticky-error", "a different error after failure")
        else:
            raise AssertionError("reader recovered after an error") from exc
        expect(reader.buffered == 0, "buffer-after-error", f"{reader.buffered} bytes kept")


# --------------------------------------------------------------------------------------- opening line


def _server_config(type_connection: str) -> dict[str, Any]:
    from .keys import rsa_key

    if type_connection in ("gui_command", "manager_command", "response"):
        return dict(CAPS)
    return {"rsa_key": rsa_key(1024), "password": "pw", **CAPS}


def opening(data: bytes) -> None:
    """Acceptor (opening line, spec §1) fed in pieces: only wire errors; buffer bounded; an accepted line is
    no longer than the cap (§1.4), names a known type, and builds that type's server machine."""
    src = ByteSource(data)
    max_size = src.pick((64, CAPS["opening_max"]))
    keyed = src.boolean()
    cuts = read_cuts(src)
    stream = src.rest()
    acceptor = Acceptor(max_size=max_size, timeout=30.0, manager_key=MANAGER_KEY if keyed else None)
    got = None
    reads = pieces(stream, cuts)
    if not reads:
        return
    try:
        for piece in reads:
            acceptor.receive_data(piece, now=NOW)
            # Bytes after the line in the same read are kept (a response stream, spec §1.5): allow for the read.
            expect(acceptor._reader.buffered <= 2 * max_size + len(piece), "opening-cap",
                   f"{acceptor._reader.buffered} bytes held, cap {max_size}")
            got = acceptor.next_opening(now=NOW)
            if got is not None:
                break
        if got is None:
            acceptor.handle_timer(NOW + 31)
            raise AssertionError("opening deadline passed without an error")
    except ProtocolError:
        return
    expect(got.type_connection in CONNECTION_TYPES, "opening-type", got.type_connection)
    expect(len(got.text) <= max_size, "opening-cap", f"{len(got.text)}-byte line accepted with cap {max_size}")
    expect(got.type_connection == "response" or not got.remainder, "opening-remainder", "remainder kept")
    conn = acceptor.build(got, **_server_config(got.type_connection))
    wire_errors_only(lambda: conn.next_event(NOW))


# ------------------------------------------------------------------------------------------------ AES


def aes(data: bytes) -> None:
    """Per-block AES decrypt (and its re-encryption oracle), the EVP stream decryptor split at fuzzed points
    against one-shot decryption, and the manager wrapper."""
    src = ByteSource(data)
    mode = src.u8() % 3
    if src.boolean():
        key, iv = CKEY, IVEC
    else:
        key, iv = src.blob()[:32].decode("latin-1"), src.blob()[:16].decode("latin-1")
    cipher_name = src.pick(_CIPHER_NAMES)
    cuts = read_cuts(src)
    ct = src.rest()
    if mode == 0:
        cipher = wire_errors_only(lambda: AesBlockCipher(key, iv))
        if cipher is None:
            return
        plain = wire_errors_only(lambda: cipher.decrypt(ct))
        if plain is not None:
            expect(cipher.encrypt(plain) == ct, "aes-roundtrip", "re-encryption differs from the ciphertext")
    elif mode == 1:
        kb, ib = MANAGER_KEY.key, MANAGER_KEY.iv

        def whole() -> bytes:
            dec = AesStreamDecryptor(kb, ib, cipher_name)
            return dec.update(ct) + dec.finalize()

        def split() -> bytes:
            dec = AesStreamDecryptor(kb, ib, cipher_name)
            return b"".join(dec.update(p) for p in pieces(ct, cuts)) + dec.finalize()

        one, many = wire_errors_only(whole), wire_errors_only(split)
        expect(one == many, "aes-stream-split", "split decryption differs from one-shot decryption")
    else:
        wire_errors_only(lambda: unwrap_manager_request(ct, MANAGER_KEY))


# -------------------------------------------------------------------------------------- compression


def decompress_any(data: bytes) -> None:
    """Channel decompression of every kind (gzip, zstd, lzo, none) under fuzzed caps, and the container
    codecs (snappy, LZ4) at a fuzzed exact size: output never over the cap, kind as detected."""
    src = ByteSource(data)
    which = src.u8() % 4
    cap = src.pick((0, 1, 1000, 65536, CAPS["max_decompressed"]))
    size = src.u32() % (CAPS["max_decompressed"] + 1)
    body = src.rest()
    if which < 3:
        got = wire_errors_only(lambda: decompress(body, max_size=cap))
        if got is not None:
            kind, out = got
            expect(len(out) <= cap, "decompress-cap", f"{len(out)} bytes out with cap {cap}")
            expect(kind == detect(body), "decompress-kind", f"{kind} for {detect(body)}")
            if kind is Compression.NONE:
                expect(out == body, "decompress-none", "uncompressed payload changed")
    else:
        method = PbCompression.SNAPPY if size & 1 else PbCompression.LZ4
        out = wire_errors_only(lambda: pb_decompress(method, body, size))
        if out is not None:
            expect(len(out) == size, "pb-decompress-size", f"{len(out)} != {size}")


# --------------------------------------------------------------------------------------------- JSON


def _plain_json(value: Any, depth: int = 0) -> bool:
    """True when ``value`` survives dumps/loads unchanged (no floats or booleans, whose text form differs)."""
    if depth > 40:
        return False
    if isinstance(value, bool | float):
        return False
    if isinstance(value, dict):
        return all(_plain_json(v, depth + 1) for v in value.values())
    if isinstance(value, list):
        return all(_plain_json(v, depth + 1) for v in value)
    return True


def _leaves(value: Any, out: list[Any], depth: int = 0) -> None:
    if len(out) > 200 or depth > 40:
        return
    if isinstance(value, dict):
        for v in value.values():
            _leaves(v, out, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _leaves(v, out, depth + 1)
    else:
        out.append(value)


def vmjson_loads(data: bytes) -> None:
    """vmjson.loads, then what callers do with peer JSON: text_value and atoi of every leaf, dumps, and the
    round trip of values without floats/booleans."""
    value = wire_errors_only(lambda: vmjson.loads(data))
    if value is None:
        return
    vmjson.text_value(value)
    leaves: list[Any] = []
    _leaves(value, leaves)
    for leaf in leaves:
        vmjson.text_value(leaf)
        vmjson.atoi(leaf)
    text = wire_errors_only(lambda: vmjson.dumps(value))
    if text is not None and _plain_json(value):
        expect(vmjson.loads(text) == value, "json-roundtrip", "dumps/loads changed the value")


# ------------------------------------------------------------------------------------ store messages


def store_message(data: bytes) -> None:
    """decode_store_message; a decoded message re-encodes (when the encoder accepts it) to one that decodes
    to the same id, time and queries."""
    try:
        msg = store_msg.decode_store_message(data)
    except store_msg.BadStoreItems as exc:
        msg = exc.partial
    except RemoteProtocolError:
        return
    expect(sum(len(q) for q in msg.queries) <= len(data), "store-size", "queries longer than the message")
    if not msg.queries:
        return
    text = wire_errors_only(lambda: store_msg.encode_store_message(msg))
    if text is None:
        return
    again = store_msg.decode_store_message(text)
    expect((again.id_main, again.client_time, again.queries) == (msg.id_main, msg.client_time, msg.queries),
           "store-roundtrip", f"{msg!r} -> {text!r} -> {again!r}")


# -------------------------------------------------------------------------------------- query result


def query_result_decode(data: bytes) -> None:
    """decode_result; a JSON result with distinct plain column names re-encodes to the same result."""
    got = wire_errors_only(lambda: query_result.decode_result(data))
    if not isinstance(got, query_result.QueryResult) or not got.columns:
        return
    names = [name for name, _ in got.columns]
    if len(set(names)) != len(names) or any(":" in n or "\0" in n for n in names):
        return
    if any(len(row) != len(names) for row in got.rows) or not got.rows:
        return
    text = wire_errors_only(lambda: query_result.encode_json_result(got.columns, got.rows))
    if text is None:
        return
    again = query_result.decode_result(text)
    expect(again == got, "query-roundtrip", f"{got!r} -> {again!r}")


# ----------------------------------------------------------------------------------------- pbstore

_HEADER = struct.Struct("<16sB3sIIIHh10sb1sIIB3sI")
_FIELD_OFFSETS = {"size": 20, "size_compress": 24, "count": 28, "checksum": 48, "counter": 52, "time_s": 60}
_INTERESTING = (0, 1, 2, 35, 36, 58, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, PB_SIZE_CAP,
                PB_SIZE_CAP + 1)


def build_container(src: ByteSource) -> bytes:
    """A container from fuzzed packets, header mode and codec, then fuzzed lies in its counts, offsets, sizes
    and checksum, and an optional truncation or tail."""
    hm = src.u8() & 1
    method = src.pick((None, PbCompression.SNAPPY, PbCompression.LZ4))
    builder = pbstore.ContainerBuilder(hm)
    for _ in range(src.below(6) + 1):
        packet = src.blob()[:2048]
        builder.add(NOW - 1, src.u16(), packet, header_ip_offset=src.pick((14, 18, 0, 1000, 1001)))
    payload = bytearray(builder.build(counter=src.u16() + 1, time_s=src.pick((0, NOW, NOW + 31)),
                                      compress=method, checksum=src.boolean()))
    for _ in range(src.below(4)):
        field = src.below(len(_FIELD_OFFSETS) + 2)
        value = src.pick(_INTERESTING) if src.boolean() else src.u32()
        if field < len(_FIELD_OFFSETS):
            offset = list(_FIELD_OFFSETS.values())[field]
        elif field == len(_FIELD_OFFSETS):  # one of the offsets
            count = int.from_bytes(payload[28:32], "little")
            offset = 64 + 4 * src.below(max(1, min(count, 64)))
        else:  # a caplen inside an uncompressed area
            offset = 64 + src.u16() % max(1, len(payload) - 64)
        if offset + 4 <= len(payload):
            payload[offset : offset + 4] = struct.pack("<I", value)
    cut = src.u8()
    if cut & 0x80:
        del payload[len(payload) - (cut & 0x7F) % max(1, len(payload)) :]
    elif cut & 0x40:
        payload += src.blob()
    return bytes(payload)


def pbstore_container(data: bytes) -> None:
    """validate_container, then decode_container (both codecs) as the central would: only wire errors; a
    validated container has size <= 256 MiB (§9.8); an uncompressed validated container decodes; every
    packet lies inside the area."""
    src = ByteSource(data)
    payload = build_container(src) if src.boolean() else src.rest()
    try:
        pbstore.validate_container(payload, now=NOW, max_size=10 * 1024 * 1024)
    except RemoteProtocolError:
        return
    header = pbstore.peek_header(payload)
    expect(header.size <= PB_SIZE_CAP, "pb-size-cap", f"container declaring {header.size} bytes validated")
    if header.size > PB_DECODE_LIMIT:
        return
    methods = (PbCompression.SNAPPY, PbCompression.LZ4) if header.size_compress else (None,)
    for method in methods:
        try:
            container = pbstore.decode_container(payload, method)
        except RemoteProtocolError as exc:
            expect(method is not None, "pb-validate-decode", f"validated uncompressed container: {exc.reason}")
            continue
        expect(len(container.area) == header.size, "pb-area", f"{len(container.area)} != {header.size}")
        total = 0
        for i, packet in enumerate(container.iter_packets()):
            caplen, view = packet[2], packet[9]
            expect(len(view) == caplen, "pb-packet-bounds", f"packet {i}: {len(view)} of {caplen} bytes")
            total += caplen
            container.packet(i)
        expect(total <= header.size, "pb-total", f"{total} packet bytes in a {header.size}-byte area")
