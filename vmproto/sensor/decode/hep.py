"""HEP v3 (Homer encapsulation protocol) messages: datagrams, TCP streams, and their DecodedPacket form.

A HEP3 message is ``"HEP3"``, a 16-bit total length, then chunks of (vendor 16, type 16, length 16 incl. the
6-byte chunk header, value). The chunk types used here are the generic ones (vendor 0): 1 IP family, 2 IP
protocol, 3/4 IPv4 source/destination, 5/6 IPv6 source/destination, 7/8 ports, 9/10 time (s, us),
11 protocol type (1 SIP, 4 RTP, 5 RTCP as JSON, 100 log ...), 12 capture agent id, 15 payload,
16 compressed payload, 18 VLAN, 23 TCP flags.

Differences from the reference, on purpose:

* The reference only takes HEP from its listener; `vmproto` also decodes it from capture files.
* Compressed payload chunks (0x10) are inflated whether they are gzip, zlib or raw deflate. The reference
  accepts gzip only; the public capture pub_hepws_hep3_compressed yields nothing there.
* A protocol id of 22 (IDP) is read as UDP, like the reference's ``hep_kamailio_protocol_id_fix`` default.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import DecodeError
from .record import DecodedPacket
from .synth import build_ip_packet

MAGIC = b"HEP3"
MAX_PAYLOAD = 1 << 20  # cap on an inflated payload; a HEP message itself is at most 64 KiB
_CHUNK = struct.Struct("!HHH")

PROTO_TYPE_SIP = 1
PROTO_TYPE_RTP = 4
PROTO_TYPE_RTCP_JSON = 5


@dataclass(slots=True)
class HepMessage:
    """The fields of one HEP3 message that call analysis needs."""

    family: int = 0  # 2 AF_INET, 10 AF_INET6
    ip_proto: int = 0
    src: bytes = b""
    dst: bytes = b""
    sport: int = 0
    dport: int = 0
    ts_sec: int | None = None
    ts_usec: int = 0
    proto_type: int = 0
    capture_id: int = 0
    payload: bytes = b""
    vlan: int = -1
    tcp_flags: int = 0
    correlation_id: bytes = b""


def _inflate(data: bytes) -> bytes:
    for wbits in (47, -15):  # 47: zlib or gzip by header; -15: raw deflate
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(data, MAX_PAYLOAD)
        except zlib.error:
            continue
        if d.unconsumed_tail:
            raise DecodeError("hep_payload_too_large", f"inflated payload exceeds {MAX_PAYLOAD} bytes")
        return out
    raise DecodeError("hep_bad_compressed_payload", "chunk 0x10 is neither gzip, zlib nor raw deflate")


def parse_hep3(data: bytes) -> HepMessage:
    """Decode one complete HEP3 message (`data` starts with "HEP3" and holds the whole message).

    Returns the message; raises `DecodeError` when the magic, the length or a chunk is invalid.
    """
    if len(data) < 6 or data[:4] != MAGIC:
        raise DecodeError("hep_bad_magic", "message does not start with HEP3")
    total = int.from_bytes(data[4:6], "big")
    if total < 6 or total > len(data):
        raise DecodeError("hep_bad_length", f"length {total}, have {len(data)} bytes")
    msg = HepMessage()
    pos = 6
    while pos + 6 <= total:
        vendor, ctype, clen = _CHUNK.unpack_from(data, pos)
        if clen < 6 or pos + clen > total:
            raise DecodeError("hep_bad_chunk", f"chunk type {ctype} length {clen} at {pos}")
        value = data[pos + 6 : pos + clen]
        pos += clen
        if vendor != 0:
            continue  # vendor-specific chunks carry nothing we use
        n = len(value)
        if ctype == 1 and n == 1:
            msg.family = value[0]
        elif ctype == 2 and n == 1:
            msg.ip_proto = 17 if value[0] == 22 else value[0]
        elif ctype in (3, 4) and n == 4 or ctype in (5, 6) and n == 16:
            if ctype & 1:
                msg.src = bytes(value)
            else:
                msg.dst = bytes(value)
        elif ctype == 7 and n == 2:
            msg.sport = int.from_bytes(value, "big")
        elif ctype == 8 and n == 2:
            msg.dport = int.from_bytes(value, "big")
        elif ctype == 9 and n == 4:
            msg.ts_sec = int.from_bytes(value, "big")
        elif ctype == 10 and n == 4:
            msg.ts_usec = int.from_bytes(value, "big")
        elif ctype == 11 and n == 1:
            msg.proto_type = value[0]
        elif ctype == 12 and n in (2, 4):
            msg.capture_id = int.from_bytes(value, "big")
        elif ctype == 15:
            msg.payload += bytes(value)
        elif ctype == 16:
            msg.payload += _inflate(bytes(value))
        elif ctype == 17:
            msg.correlation_id = bytes(value)
        elif ctype == 18 and n == 2:
            msg.vlan = int.from_bytes(value, "big") & 0xFFF
        elif ctype == 23 and n == 1:
            msg.tcp_flags = value[0]
    if pos != total:
        raise DecodeError("hep_bad_chunk", f"{total - pos} trailing bytes after the last chunk")
    return msg


def split_hep3(data: bytes) -> tuple[list[bytes], int]:
    """Split a buffer into whole HEP3 messages.

    Returns (messages, bytes consumed). Stops at an incomplete message; raises `DecodeError` when the data
    at a message boundary is not HEP3 (a stream out of sync cannot be resynchronised safely).
    """
    out = []
    pos = 0
    n = len(data)
    while n - pos >= 6:
        if data[pos : pos + 4] != MAGIC:
            raise DecodeError("hep_bad_magic", f"no HEP3 magic at stream offset {pos}")
        total = int.from_bytes(data[pos + 4 : pos + 6], "big")
        if total < 6:
            raise DecodeError("hep_bad_length", f"length {total}")
        if n - pos < total:
            break
        out.append(bytes(data[pos : pos + total]))
        pos += total
    return out, pos


class HepStreamDecoder:
    """Turns the byte stream of one HEP-over-TCP connection into messages, with a bounded buffer."""

    def __init__(self, max_buffer: int = 1 << 20) -> None:
        self.max_buffer = max_buffer
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[HepMessage]:
        """Append stream bytes; return the messages completed by them.

        Raises `DecodeError` when the stream is out of sync, a message is malformed, or more than
        `max_buffer` bytes are pending; the buffer is cleared first so the caller may keep feeding.
        """
        self._buf += data
        try:
            raw, used = split_hep3(self._buf)
            del self._buf[:used]
            if len(self._buf) > self.max_buffer:
                raise DecodeError("hep_stream_overflow", f"more than {self.max_buffer} bytes without a whole message")
            return [parse_hep3(m) for m in raw]
        except DecodeError:
            self._buf.clear()
            raise


def hep_to_record(msg: HepMessage, fallback_ts_ns: int, vlan: int = -1) -> DecodedPacket:
    """Return the DecodedPacket for a HEP message carrying an IP packet's payload (SIP, RTP ...).

    The time is the message's own (chunks 9/10) when present, else `fallback_ts_ns`. Raises `DecodeError`
    when the message lacks addresses, uses a family/protocol we cannot represent, or carries no payload.
    """
    if msg.family == 2:
        version = 4
    elif msg.family == 10:
        version = 6
    else:
        raise DecodeError("hep_bad_family", f"IP family {msg.family}")
    alen = 4 if version == 4 else 16
    if len(msg.src) != alen or len(msg.dst) != alen:
        raise DecodeError("hep_missing_address", "source/destination chunk missing or of the other family")
    if msg.ip_proto not in (6, 17):
        raise DecodeError("hep_unsupported_ip_proto", f"IP protocol {msg.ip_proto}")
    if msg.proto_type == PROTO_TYPE_RTCP_JSON or msg.proto_type >= 0x20:
        raise DecodeError("hep_report_type", f"protocol type {msg.proto_type} is a report, not a packet")
    if not msg.payload:
        raise DecodeError("hep_no_payload", "no payload chunk")
    ts_ns = fallback_ts_ns if msg.ts_sec is None else msg.ts_sec * 1_000_000_000 + msg.ts_usec * 1000
    tcp_flags = (msg.tcp_flags or 0x18) if msg.ip_proto == 6 else 0
    ip_packet = build_ip_packet(version, msg.src, msg.dst, msg.ip_proto, msg.sport, msg.dport, msg.payload,
                                tcp_flags=tcp_flags)
    return DecodedPacket(ts_ns, version, msg.src, msg.dst, msg.ip_proto, msg.sport, msg.dport, msg.payload, 64,
                         ip_packet, 0, tcp_flags, msg.vlan if msg.vlan >= 0 else vlan, "hep")
