"""Test-only adapter: plain captures (Ethernet, VLAN, Linux cooked, raw IP) -> DecodedPacket records via dpkt.

Stands in for vmproto.sensor.decode until that package exposes a capture decoder; it knows no tunnels, so the
corpus tests use it only for captures without encapsulation. IPv4 fragments are reassembled (no overlap
handling: the corpus has none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import dpkt


class DecodedPacket(NamedTuple):
    """Same fields, same order as vmproto.sensor.decode.record.DecodedPacket (docs/architecture.md)."""

    ts_ns: int
    ip_version: int
    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    payload: bytes
    ttl: int
    ip_packet: bytes
    tcp_seq: int
    tcp_flags: int
    vlan: int
    tunnel: str


def _reader(f):  # type: ignore[no-untyped-def]
    head = f.read(4)
    f.seek(0)
    if head == b"\x0a\x0d\x0d\x0a":
        return dpkt.pcapng.Reader(f)
    return dpkt.pcap.Reader(f)


def _ip_from_frame(linktype: int, buf: bytes) -> tuple[bytes | None, int]:
    vlan = -1
    if linktype == dpkt.pcap.DLT_EN10MB:
        off, etype = 14, int.from_bytes(buf[12:14], "big")
        while etype in (0x8100, 0x88A8):
            vlan = int.from_bytes(buf[off:off + 2], "big") & 0x0FFF
            etype = int.from_bytes(buf[off + 2:off + 4], "big")
            off += 4
        return (buf[off:] if etype in (0x0800, 0x86DD) else None), vlan
    if linktype == 113:  # Linux cooked v1
        etype = int.from_bytes(buf[14:16], "big")
        return (buf[16:] if etype in (0x0800, 0x86DD) else None), vlan
    if linktype in (101, 12, 14):  # raw IP
        return buf, vlan
    if linktype == 0:  # BSD loopback
        return buf[4:], vlan
    return None, vlan


def read_capture(path: Path) -> Iterator[DecodedPacket]:
    """Yield the UDP/TCP packets of a capture as DecodedPacket records (others are skipped)."""
    frags: dict[tuple[bytes, bytes, int, int], dict[int, bytes]] = {}
    frag_last: dict[tuple[bytes, bytes, int, int], int] = {}
    with open(path, "rb") as f:
        r = _reader(f)
        lt = r.datalink()
        for ts, buf in r:
            ts_ns = int(round(float(ts) * 1_000_000)) * 1000
            raw, vlan = _ip_from_frame(lt, bytes(buf))
            if not raw:
                continue
            version = raw[0] >> 4
            if version == 4:
                ip = dpkt.ip.IP(raw)
                if ip.mf or ip.offset:
                    key = (ip.src, ip.dst, ip.id, ip.p)
                    end = ip.len if ip.len else len(raw)
                    chunk = raw[ip.hl * 4: end]
                    frags.setdefault(key, {})[ip.offset * 8] = chunk  # dpkt gives 8-byte units
                    if not ip.mf:
                        frag_last[key] = ip.offset * 8 + len(chunk)
                    parts = frags[key]
                    if key not in frag_last or sum(len(v) for v in parts.values()) != frag_last[key]:
                        continue
                    data = b"".join(parts[o] for o in sorted(parts))
                    del frags[key], frag_last[key]
                    l4 = dpkt.udp.UDP(data) if ip.p == 17 else dpkt.tcp.TCP(data) if ip.p == 6 else None
                    ip_packet = raw[: ip.hl * 4] + data
                else:
                    l4 = ip.data
                    ip_packet = raw[: ip.len] if ip.len else raw
                src, dst, ttl = ip.src, ip.dst, ip.ttl
            elif version == 6:
                ip6 = dpkt.ip6.IP6(raw)
                l4 = ip6.data
                src, dst, ttl = ip6.src, ip6.dst, ip6.hlim
                ip_packet = raw
            else:
                continue
            if isinstance(l4, dpkt.udp.UDP):
                payload = bytes(l4.data)
                if l4.ulen >= 8:
                    payload = payload[: l4.ulen - 8]
                yield DecodedPacket(ts_ns, version, bytes(src), bytes(dst), 17, l4.sport, l4.dport, payload,
                                    ttl, ip_packet, 0, 0, vlan, "")
            elif isinstance(l4, dpkt.tcp.TCP):
                yield DecodedPacket(ts_ns, version, bytes(src), bytes(dst), 6, l4.sport, l4.dport,
                                    bytes(l4.data), ttl, ip_packet, l4.seq, l4.flags, vlan, "")
