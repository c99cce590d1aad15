"""Header offsets of a raw frame for packet mirroring (spec §9.11): where the outer IP header starts
(`header_ip_encaps_offset`), where the IP header to analyse starts (`header_ip_offset`, the inner one after a
tunnel), and the outermost VLAN id (0xFFFE = no VLAN tag, as the reference sender writes)."""

from __future__ import annotations

import struct

__all__ = ["frame_offsets", "VLAN_NOSET"]

VLAN_NOSET = 0xFFFE
_U16 = struct.Struct("!H").unpack_from
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_IPV4, _IPV6 = 0x0800, 0x86DD
_ETH_LINKS = (1,)
_RAW_LINKS = (12, 14, 101, 228, 229)
_NULL_LINKS = (0, 108)
_SLL, _SLL2 = 113, 276
_VXLAN_PORT = 4789
_MAX_DEPTH = 3


def _ether(frame: bytes, off: int) -> tuple[int, int] | None:
    """Return (ip offset, outermost vlan) of an Ethernet header at `off`, or None when it carries no IP."""
    n = len(frame)
    if n < off + 14:
        return None
    et = _U16(frame, off + 12)[0]
    p = off + 14
    vlan = VLAN_NOSET
    while et in _VLAN_TPIDS and n >= p + 4:
        if vlan == VLAN_NOSET:
            vlan = _U16(frame, p)[0] & 0x0FFF
        et = _U16(frame, p + 2)[0]
        p += 4
    if et in (0x8847, 0x8848):  # MPLS: skip labels to the bottom of stack, IP version from the nibble
        while n >= p + 4:
            bottom = frame[p + 2] & 0x01
            p += 4
            if bottom:
                break
        if n <= p or frame[p] >> 4 not in (4, 6):
            return None
        return p, vlan
    if et == 0x8864 and n >= p + 8:  # PPPoE session: 6-byte header + PPP protocol
        proto = _U16(frame, p + 6)[0]
        if proto not in (0x0021, 0x0057):
            return None
        return p + 8, vlan
    if et not in (_IPV4, _IPV6):
        return None
    return p, vlan


def _inner(frame: bytes, ip: int, depth: int = 0) -> int:
    """The IP header to analyse, starting from the IP header at `ip` (follows IPIP, GRE and VXLAN)."""
    n = len(frame)
    if depth >= _MAX_DEPTH or n < ip + 20:
        return ip
    version = frame[ip] >> 4
    if version == 4:
        ihl = (frame[ip] & 0x0F) * 4
        proto = frame[ip + 9]
        if _U16(frame, ip + 6)[0] & 0x3FFF:  # a fragment: its payload cannot be followed
            return ip
        p = ip + ihl
    elif version == 6 and n >= ip + 40:
        proto = frame[ip + 6]
        p = ip + 40
    else:
        return ip
    if proto in (4, 41) and n > p:
        return _inner(frame, p, depth + 1)
    if proto == 47 and n >= p + 4:
        flags = frame[p]
        ptype = _U16(frame, p + 2)[0]
        q = p + 4 + 4 * (((flags >> 7) & 1) + ((flags >> 5) & 1) + ((flags >> 4) & 1))
        if ptype in (_IPV4, _IPV6) and n > q:
            return _inner(frame, q, depth + 1)
        if ptype == 0x6558:
            got = _ether(frame, q)
            return _inner(frame, got[0], depth + 1) if got else ip
        return ip
    if proto == 17 and n >= p + 8 + 8 and _U16(frame, p + 2)[0] == _VXLAN_PORT:
        got = _ether(frame, p + 16)
        return _inner(frame, got[0], depth + 1) if got else ip
    return ip


def frame_offsets(linktype: int, frame: bytes) -> tuple[int, int, int] | None:
    """Return (header_ip_encaps_offset, header_ip_offset, vlan) for a frame of `linktype`, or None when no IP
    header is found (such packets are not shipped, spec §9.11)."""
    vlan = VLAN_NOSET
    if linktype in _ETH_LINKS:
        got = _ether(frame, 0)
        if got is None:
            return None
        outer, vlan = got
    elif linktype in _RAW_LINKS:
        outer = 0
    elif linktype in _NULL_LINKS:
        outer = 4
    elif linktype == _SLL:
        if len(frame) < 16 or _U16(frame, 14)[0] not in (_IPV4, _IPV6):
            return None
        outer = 16
    elif linktype == _SLL2:
        if len(frame) < 20 or _U16(frame, 0)[0] not in (_IPV4, _IPV6):
            return None
        outer = 20
    else:
        return None
    if len(frame) <= outer or frame[outer] >> 4 not in (4, 6):
        return None
    inner = _inner(frame, outer)
    if inner > 1000:  # the receiver rejects header_ip_offset > 1000 (spec §9.8)
        inner = outer
    return outer, inner, vlan
