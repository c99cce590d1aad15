"""From a captured frame to a TCP segment: link layer, IPv4/IPv6, TCP.

Only what the inspector needs: frames that are not TCP over IP are skipped (None), never an exception.
IPv4 fragments are skipped too: the channel's TCP segments are not fragmented in practice, and a half-parsed
fragment would inject garbage into a stream.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import NamedTuple

from vmproto.inspect.pcapread import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    Frame,
)

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_ACK = 0x10

_ETH_VLAN = {0x8100, 0x88A8, 0x9100}
_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
# BSD loopback address families for IPv6 differ per OS (24 NetBSD/OpenBSD, 28 FreeBSD, 30 macOS).
_AF_INET = 2
_AF_INET6 = {10, 24, 28, 30}


class TcpSegment(NamedTuple):
    """One TCP segment. Addresses are printable strings ("127.0.0.1", "::1")."""

    frame: int
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes


def network_layer(frame: Frame) -> tuple[int, bytes] | None:
    """Return (4 or 6, IP packet bytes) for a frame carrying IP, else None."""
    data = frame.data
    lt = frame.linktype
    if lt == LINKTYPE_ETHERNET:
        if len(data) < 14:
            return None
        ethertype = struct.unpack_from("!H", data, 12)[0]
        pos = 14
        while ethertype in _ETH_VLAN and len(data) >= pos + 4:
            ethertype = struct.unpack_from("!H", data, pos + 2)[0]
            pos += 4
        return _by_ethertype(ethertype, data[pos:])
    if lt == LINKTYPE_LINUX_SLL:
        if len(data) < 16:
            return None
        return _by_ethertype(struct.unpack_from("!H", data, 14)[0], data[16:])
    if lt == LINKTYPE_LINUX_SLL2:
        if len(data) < 20:
            return None
        return _by_ethertype(struct.unpack_from("!H", data, 0)[0], data[20:])
    if lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(data) < 4:
            return None
        # NULL stores the family in host byte order, LOOP in network order; accept both readings.
        le, be = struct.unpack_from("<I", data, 0)[0], struct.unpack_from(">I", data, 0)[0]
        family = le if le < 256 else be
        if family == _AF_INET:
            return 4, data[4:]
        if family in _AF_INET6:
            return 6, data[4:]
        return None
    if lt in (LINKTYPE_RAW, 12, LINKTYPE_IPV4, LINKTYPE_IPV6):
        if not data:
            return None
        version = data[0] >> 4
        return (version, data) if version in (4, 6) else None
    return None


def _by_ethertype(ethertype: int, payload: bytes) -> tuple[int, bytes] | None:
    if ethertype == _ETH_IPV4:
        return 4, payload
    if ethertype == _ETH_IPV6:
        return 6, payload
    return None


def _ip_to_tcp(version: int, packet: bytes) -> tuple[str, str, bytes] | None:
    """Return (src, dst, TCP header+payload) or None when the packet is not a whole, unfragmented TCP packet."""
    if version == 4:
        if len(packet) < 20:
            return None
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        frag = struct.unpack_from("!H", packet, 6)[0]
        if packet[9] != 6 or ihl < 20 or frag & 0x3FFF:
            return None
        # The IP total length bounds the segment: Ethernet may pad short frames with zeros.
        end = min(len(packet), total) if total >= ihl else len(packet)
        src = str(ipaddress.IPv4Address(packet[12:16]))
        dst = str(ipaddress.IPv4Address(packet[16:20]))
        return src, dst, packet[ihl:end]
    if len(packet) < 40:
        return None
    next_header = packet[6]
    end = min(len(packet), 40 + struct.unpack_from("!H", packet, 4)[0])
    pos = 40
    # Walk the extension headers that may precede TCP (hop-by-hop, routing, destination options).
    while next_header in (0, 43, 60) and pos + 8 <= end:
        next_header, ext_len = packet[pos], packet[pos + 1]
        pos += (ext_len + 1) * 8
    if next_header != 6 or pos > end:
        return None
    src = str(ipaddress.IPv6Address(packet[8:24]))
    dst = str(ipaddress.IPv6Address(packet[24:40]))
    return src, dst, packet[pos:end]


def parse_tcp(frame: Frame) -> TcpSegment | None:
    """Return the TCP segment a frame carries, or None (not IP/TCP, fragment, or too short to parse)."""
    net = network_layer(frame)
    if net is None:
        return None
    ip = _ip_to_tcp(*net)
    if ip is None:
        return None
    src, dst, tcp = ip
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, off_flags = struct.unpack_from("!HHIIH", tcp, 0)
    data_offset = (off_flags >> 12) * 4
    if data_offset < 20 or data_offset > len(tcp):
        return None
    return TcpSegment(frame.number, frame.ts, src, sport, dst, dport, seq, ack, off_flags & 0x3F, tcp[data_offset:])
