"""IPFIX v10 as exported by Oracle (Acme Packet) SBCs: SIP messages in sets 258-261 over a TCP stream.

Message: version 10, length, export time, sequence, observation domain (16 bytes), then sets of
(set id, set length). The exporter opens with a handshake set 256 and expects the same message back with
set id 257; `IpfixStreamDecoder.replies` holds those answers for a listener to send.

Record layouts (big-endian, packed):

* 258 SIP In (UDP):  time s, time us, slot, port, vlan(2), call-id end, IP len(2), vlan, tos, total len(2),
  id(2), flags(2), ttl, proto, pos(2), src IP, dst IP, dst port, src port, UDP len, SIP length, SIP.
* 259 SIP Out (UDP): time s, time us, slot, port, vlan(2), call-id length n, call-id[n], then as 258 from
  "call-id end".
* 260 SIP In TCP:    time s, time us, slot, port, vlan(2), dst IP, src IP, dst port, src port, context(4),
  call-id end, SIP length, SIP.
* 261 SIP Out TCP:   as 260 up to context, call-id length n, call-id[n], call-id end, SIP length, SIP.

Media arrives only as QoS sets (268), so IPFIX yields signalling only, as with the reference.
Difference from the reference: we walk every set of a message (the reference reads only the first) and
also decode the stream from capture files, not only from a listener.
"""

from __future__ import annotations

import struct

from .errors import DecodeError
from .record import DecodedPacket
from .synth import build_ip_packet

VERSION = 10
SET_HANDSHAKE = 256
SET_HANDSHAKE_REPLY = 257
SET_SIP_IN, SET_SIP_OUT, SET_SIP_IN_TCP, SET_SIP_OUT_TCP = 258, 259, 260, 261
_MSG = struct.Struct("!HHIII")
_UDP_TAIL = struct.Struct("!BHBBHHHBBH4s4sHHHH")  # from "call-id end" to "SIP length": 30 bytes
_TCP_HEAD = struct.Struct("!4s4sHHI")  # dst IP, src IP, dst port, src port, context


def _sip_record(set_id: int, body: bytes) -> DecodedPacket:
    if len(body) < 12:
        raise DecodeError("ipfix_truncated", f"set {set_id} shorter than its fixed part")
    sec, usec = struct.unpack_from("!II", body, 0)
    vlan = -1  # the interface VLAN (IntVlan) is the SBC's, not the packet's
    pos = 12
    if set_id == SET_SIP_OUT:
        n = body[pos]
        pos += 1 + n
    if set_id in (SET_SIP_IN, SET_SIP_OUT):
        if len(body) < pos + _UDP_TAIL.size:
            raise DecodeError("ipfix_truncated", f"set {set_id} shorter than its fixed part")
        (_end, _iplen, _vlan, _tos, _tlen, _tid, _tflags, ttl, _tproto, _tpos, src, dst, dport, sport, _ulen,
         sip_len) = _UDP_TAIL.unpack_from(body, pos)
        pos += _UDP_TAIL.size
        proto = 17
    else:
        if len(body) < pos + _TCP_HEAD.size + 1:
            raise DecodeError("ipfix_truncated", f"set {set_id} shorter than its fixed part")
        dst, src, dport, sport, _ctx = _TCP_HEAD.unpack_from(body, pos)
        pos += _TCP_HEAD.size
        if set_id == SET_SIP_OUT_TCP:
            n = body[pos]
            pos += 1 + n
        if len(body) < pos + 3:
            raise DecodeError("ipfix_truncated", f"set {set_id} shorter than its fixed part")
        sip_len = int.from_bytes(body[pos + 1 : pos + 3], "big")
        pos += 3
        ttl = 64
        proto = 6
    sip = bytes(body[pos : pos + sip_len])
    if len(sip) != sip_len:
        raise DecodeError("ipfix_truncated", f"SIP message of {sip_len} bytes, {len(sip)} present")
    ts_ns = sec * 1_000_000_000 + usec * 1000
    flags = 0x18 if proto == 6 else 0
    ip_packet = build_ip_packet(4, src, dst, proto, sport, dport, sip, ttl=ttl or 64, tcp_flags=flags or 0x18)
    return DecodedPacket(ts_ns, 4, src, dst, proto, sport, dport, sip, ttl or 64, ip_packet, 0, flags, vlan, "ipfix")


def message_length(head: bytes | bytearray, pos: int = 0) -> int:
    """Return the length of the message starting at `head[pos]` (needs its first 20 bytes when present).

    Oracle-SBC exporters (and the corpus generator modelled on them) put a length 4 short of the message
    into the header when it holds one set: header 16 + set length = length field + 4. The reference copes
    by skipping bytes until the next version number; we recognise the pattern instead. Standard IPFIX
    (length covers the sets) is read as is.
    """
    length = int.from_bytes(head[pos + 2 : pos + 4], "big")
    if len(head) - pos >= 20:
        set_len = int.from_bytes(head[pos + 18 : pos + 20], "big")
        if 16 + set_len == length + 4:
            return length + 4
    return length


def parse_ipfix_message(msg: bytes) -> tuple[list[DecodedPacket], bool]:
    """Decode one whole IPFIX message.

    Returns (SIP records, whether it held a handshake set). Sets other than 256 and 258-261 are skipped.
    Raises `DecodeError` for a wrong version, inconsistent lengths or a truncated SIP set.
    """
    if len(msg) < 16:
        raise DecodeError("ipfix_truncated", "message header is 16 bytes")
    version, length, _export, _seq, _domain = _MSG.unpack_from(msg, 0)
    if version != VERSION:
        raise DecodeError("ipfix_bad_version", f"version {version}")
    length = message_length(msg)
    if length < 16 or length > len(msg):
        raise DecodeError("ipfix_bad_length", f"length {length}, have {len(msg)}")
    out: list[DecodedPacket] = []
    handshake = False
    pos = 16
    while pos + 4 <= length:
        set_id, set_len = struct.unpack_from("!HH", msg, pos)
        if set_len < 4 or pos + set_len > length:
            raise DecodeError("ipfix_bad_set_length", f"set {set_id} length {set_len}")
        body = msg[pos + 4 : pos + set_len]
        pos += set_len
        if set_id == SET_HANDSHAKE:
            handshake = True
        elif set_id in (SET_SIP_IN, SET_SIP_OUT, SET_SIP_IN_TCP, SET_SIP_OUT_TCP):
            out.append(_sip_record(set_id, body))
    return out, handshake


def handshake_reply(msg: bytes) -> bytes:
    """Return the answer to a handshake message: the same bytes with the first set id changed to 257."""
    reply = bytearray(msg)
    struct.pack_into("!H", reply, 16, SET_HANDSHAKE_REPLY)
    return bytes(reply)


class IpfixStreamDecoder:
    """Turns one exporter TCP stream into SIP records; handshake answers collect in `replies`."""

    def __init__(self, max_buffer: int = 1 << 20) -> None:
        self.max_buffer = max_buffer
        self.replies: list[bytes] = []
        self.skipped_bytes = 0
        self.errors: dict[str, int] = {}
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[DecodedPacket]:
        """Append stream bytes; return the SIP records of the messages they completed.

        Bytes that cannot start a message are skipped one by one (counted in `skipped_bytes`), as a stream
        resynchronisation. A malformed message is dropped and counted in `errors` by kind; the rest of the
        stream stays usable. Raises `DecodeError` when more than `max_buffer` bytes are pending (the buffer
        is cleared first).
        """
        buf = self._buf
        buf += data
        out: list[DecodedPacket] = []
        pos = 0
        while len(buf) - pos >= 16:
            version = int.from_bytes(buf[pos : pos + 2], "big")
            if len(buf) - pos < 20 and int.from_bytes(buf[pos + 2 : pos + 4], "big") > 16:
                break  # need the first set header to know the message length
            length = message_length(buf, pos)
            if version != VERSION or length < 16:
                pos += 1
                self.skipped_bytes += 1
                continue
            if len(buf) - pos < length:
                break
            msg = bytes(buf[pos : pos + length])
            pos += length
            try:
                records, handshake = parse_ipfix_message(msg)
            except DecodeError as exc:
                self.errors[exc.kind] = self.errors.get(exc.kind, 0) + 1
                continue
            if handshake:
                self.replies.append(handshake_reply(msg))
            out.extend(records)
        del buf[:pos]
        if len(buf) > self.max_buffer:
            buf.clear()
            raise DecodeError("ipfix_stream_overflow", f"more than {self.max_buffer} bytes without a whole message")
        return out
