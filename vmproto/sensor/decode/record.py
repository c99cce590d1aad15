"""The decoded-packet record handed from the packet engine to call analysis (docs/architecture.md)."""

from __future__ import annotations

from typing import NamedTuple


class DecodedPacket(NamedTuple):
    """One innermost IP packet after link-layer, tunnel and fragment decoding.

    Field order is part of the contract in docs/architecture.md; never reorder.
    """

    ts_ns: int  # capture time in ns (for HEP/IPFIX: the time carried in the message)
    ip_version: int  # 4 or 6
    src: bytes  # 4 or 16 bytes
    dst: bytes
    proto: int  # 17 UDP, 6 TCP, 132 SCTP
    sport: int
    dport: int
    payload: bytes  # L4 payload (TCP: segment payload; SCTP: one DATA chunk's user data)
    ttl: int
    ip_packet: bytes  # innermost IP packet, IP header first (synthesised for HEP/IPFIX/AudioCodes media)
    tcp_seq: int  # 0 for non-TCP
    tcp_flags: int  # 0 for non-TCP
    vlan: int  # -1 when none
    tunnel: str  # "" for none, else the outermost tunnel stripped: "gre", "erspan2", "vxlan", ...
