"""One-line summaries of the packets inside pcap_block_store containers.

Format (as in the reference transcripts): `UDP 192.0.2.10:5060 > 198.51.100.20:5060 len 557 SIP INVITE ...`,
`... RTP pt=0 seq=28258 ts=732435304 ssrc=0x877e04f3`; TCP and other protocols get the same address part.
"""

from __future__ import annotations

import ipaddress
import struct

from vmproto.inspect.netparse import network_layer
from vmproto.inspect.pcapread import Frame

_SIP_METHODS = (
    b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"OPTIONS ", b"REGISTER ", b"PRACK ", b"SUBSCRIBE ", b"NOTIFY ",
    b"PUBLISH ", b"INFO ", b"REFER ", b"MESSAGE ", b"UPDATE ",
)
_SIP_LINE_MAX = 120


def _addresses(version: int, packet: bytes) -> tuple[str, str, int, bytes] | None:
    """Return (src, dst, protocol, L4 bytes) of an IP packet, or None if it is too short."""
    if version == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        end = min(len(packet), total) if total >= ihl else len(packet)
        return (
            str(ipaddress.IPv4Address(packet[12:16])),
            str(ipaddress.IPv4Address(packet[16:20])),
            packet[9],
            packet[ihl:end],
        )
    if version == 6 and len(packet) >= 40:
        end = min(len(packet), 40 + struct.unpack_from("!H", packet, 4)[0])
        return (
            str(ipaddress.IPv6Address(packet[8:24])),
            str(ipaddress.IPv6Address(packet[24:40])),
            packet[6],
            packet[40:end],
        )
    return None


def _application(payload: bytes) -> str:
    if payload.startswith(_SIP_METHODS) or payload.startswith(b"SIP/2.0 "):
        line = payload.split(b"\r\n", 1)[0].split(b"\n", 1)[0][:_SIP_LINE_MAX]
        return " SIP " + line.decode("utf-8", "replace")
    if len(payload) >= 12 and payload[0] >> 6 == 2:
        pt = payload[1] & 0x7F
        seq, ts, ssrc = struct.unpack_from("!HII", payload, 2)
        return f" RTP pt={pt} seq={seq} ts={ts} ssrc=0x{ssrc:08x}"
    return ""


def packet_summary(dlt: int, data: bytes) -> str:
    """Return a one-line description of a captured packet of link type `dlt`. Never raises."""
    net = network_layer(Frame(0, 0.0, dlt, data))
    if net is None:
        return f"non-IP packet (link type {dlt}, {len(data)} bytes)"
    parsed = _addresses(*net)
    if parsed is None:
        return f"IPv{net[0]} packet too short ({len(net[1])} bytes)"
    src, dst, proto, l4 = parsed
    if proto == 17 and len(l4) >= 8:
        sport, dport, length = struct.unpack_from("!HHH", l4, 0)
        payload = l4[8:length] if length >= 8 else l4[8:]
        return f"UDP {src}:{sport} > {dst}:{dport} len {len(payload)}{_application(payload)}"
    if proto == 6 and len(l4) >= 20:
        sport, dport = struct.unpack_from("!HH", l4, 0)
        offset = (l4[12] >> 4) * 4
        payload = l4[offset:] if 20 <= offset <= len(l4) else b""
        return f"TCP {src}:{sport} > {dst}:{dport} flags 0x{l4[13]:02x} len {len(payload)}{_application(payload)}"
    return f"IPv{net[0]} {src} > {dst} proto {proto} len {len(l4)}"
