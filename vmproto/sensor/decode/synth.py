"""Build IP packets for messages that arrive without one (HEP, IPFIX, AudioCodes media).

Call analysis stores `DecodedPacket.ip_packet` in per-call PCAPs, so these packets carry valid IPv4 header
checksums and valid UDP/TCP checksums (mandatory for UDP over IPv6).
"""

from __future__ import annotations

import struct
import sys
from array import array

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEAD = struct.Struct("!IHBB16s16s")
_UDP = struct.Struct("!HHHH")
_TCP = struct.Struct("!HHIIBBHHH")
_SWAP = sys.byteorder == "little"


def inet_checksum(data: bytes, initial: int = 0) -> int:
    """Return the RFC 1071 ones'-complement checksum of `data` (folded, complemented, 16 bits)."""
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    words = array("H", data)
    if _SWAP:
        words.byteswap()
    total = sum(words) + initial
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def build_ip_packet(
    ip_version: int,
    src: bytes,
    dst: bytes,
    proto: int,
    sport: int,
    dport: int,
    payload: bytes,
    *,
    ttl: int = 64,
    ident: int = 0,
    tcp_seq: int = 0,
    tcp_flags: int = 0x18,
) -> bytes:
    """Return an IPv4 or IPv6 packet with a UDP (proto 17) or TCP (proto 6) header and `payload`.

    Raises ValueError for an unknown version/protocol or address lengths that do not match the version.
    """
    if proto == 17:
        l4_len = 8 + len(payload)
        l4 = bytearray(_UDP.pack(sport, dport, l4_len & 0xFFFF, 0) + payload)
        ck_off = 6
    elif proto == 6:
        l4_len = 20 + len(payload)
        l4 = bytearray(_TCP.pack(sport, dport, tcp_seq & 0xFFFFFFFF, 0, 5 << 4, tcp_flags & 0xFF, 65535, 0, 0) + payload)
        ck_off = 16
    else:
        raise ValueError(f"cannot synthesise IP protocol {proto}")
    if ip_version == 4:
        if len(src) != 4 or len(dst) != 4:
            raise ValueError("IPv4 addresses must be 4 bytes")
        pseudo = src + dst + struct.pack("!BBH", 0, proto, l4_len & 0xFFFF)
        ck = inet_checksum(bytes(l4), inet_checksum_sum(pseudo))
        if proto == 17 and ck == 0:
            ck = 0xFFFF
        struct.pack_into("!H", l4, ck_off, ck)
        total = 20 + l4_len
        head = bytearray(_IPV4.pack(0x45, 0, total & 0xFFFF, ident & 0xFFFF, 0x4000, ttl, proto, 0, src, dst))
        struct.pack_into("!H", head, 10, inet_checksum(bytes(head)))
        return bytes(head) + bytes(l4)
    if ip_version == 6:
        if len(src) != 16 or len(dst) != 16:
            raise ValueError("IPv6 addresses must be 16 bytes")
        pseudo = src + dst + struct.pack("!IxxxB", l4_len, proto)
        ck = inet_checksum(bytes(l4), inet_checksum_sum(pseudo))
        if proto == 17 and ck == 0:
            ck = 0xFFFF
        struct.pack_into("!H", l4, ck_off, ck)
        return _IPV6_HEAD.pack(6 << 28, l4_len & 0xFFFF, proto, ttl, src, dst) + bytes(l4)
    raise ValueError(f"IP version must be 4 or 6, got {ip_version}")


def inet_checksum_sum(data: bytes) -> int:
    """Return the unfolded 16-bit word sum of `data` (used to chain a pseudo-header into a checksum)."""
    if len(data) & 1:
        data = bytes(data) + b"\x00"
    words = array("H", data)
    if _SWAP:
        words.byteswap()
    return sum(words)
