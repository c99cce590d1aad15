"""Generator of test captures: IP packets wrapped in every link layer and tunnel the sensor decodes.

Independent of `vmproto.sensor` on purpose (own header builders and writers), so round-trip tests check
the decoder against a second implementation. Everything is deterministic: same arguments, same bytes.

Typical use::

    ip = udp4("192.0.2.1", "192.0.2.2", 5060, 5060, b"INVITE ...")
    linktype, frame = encapsulate("gre-key", ip)
    write_pcap(path, linktype, [(ts_ns, frame)])
"""

from __future__ import annotations

import ipaddress
import os
import random
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import BinaryIO

# link types
EN10MB, RAW, LINUX_SLL, LINUX_SLL2, NULL, LOOP = 1, 101, 113, 276, 0, 108

MAC_A = bytes.fromhex("02005e000001")
MAC_B = bytes.fromhex("02005e000002")
OUTER_SRC, OUTER_DST = "203.0.113.1", "203.0.113.2"


def addr(text: str) -> bytes:
    """Return the packed form of an IPv4 or IPv6 address."""
    return ipaddress.ip_address(text).packed


def checksum(data: bytes) -> int:
    """RFC 1071 checksum of `data`."""
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


# ------------------------------------------------------------------------------------------------------
# IP and transport


def ipv4(src: str | bytes, dst: str | bytes, proto: int, payload: bytes, *, ttl: int = 64, ident: int = 1,
         df: bool = False, mf: bool = False, frag_offset: int = 0, options: bytes = b"",
         total_length: int | None = None) -> bytes:
    """Return an IPv4 packet (valid header checksum). `frag_offset` is in bytes (multiple of 8)."""
    s = addr(src) if isinstance(src, str) else src
    d = addr(dst) if isinstance(dst, str) else dst
    if len(options) % 4:
        raise ValueError("IPv4 options must be padded to 4 bytes")
    ihl = 5 + len(options) // 4
    tot = ihl * 4 + len(payload) if total_length is None else total_length
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_offset // 8)
    head = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, tot, ident, flags, ttl, proto, 0, s, d) + options
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return head + payload


def ipv6(src: str | bytes, dst: str | bytes, next_header: int, payload: bytes, *, hop_limit: int = 64,
         ext: bytes = b"") -> bytes:
    """Return an IPv6 packet; `ext` is already-encoded extension headers (their chain starts at
    `next_header`)."""
    s = addr(src) if isinstance(src, str) else src
    d = addr(dst) if isinstance(dst, str) else dst
    body = ext + payload
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), next_header, hop_limit, s, d) + body


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """Return a UDP header + payload with a valid checksum for the given addresses."""
    length = 8 + len(payload)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + payload
    ck = checksum(_pseudo(addr(src), addr(dst), 17, length) + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", ck) + seg[8:]


def tcp(src: str, dst: str, sport: int, dport: int, payload: bytes, *, seq: int = 1000, ack: int = 0,
        flags: int = 0x18) -> bytes:
    """Return a TCP header (no options) + payload with a valid checksum."""
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    ck = checksum(_pseudo(addr(src), addr(dst), 6, len(seg)) + seg)
    return seg[:16] + struct.pack("!H", ck) + seg[18:]


def udp4(src: str, dst: str, sport: int, dport: int, payload: bytes, **kw) -> bytes:
    """Return a whole IPv4/UDP packet."""
    return ipv4(src, dst, 17, udp(src, dst, sport, dport, payload), **kw)


def udp6(src: str, dst: str, sport: int, dport: int, payload: bytes, **kw) -> bytes:
    """Return a whole IPv6/UDP packet."""
    return ipv6(src, dst, 17, udp(src, dst, sport, dport, payload), **kw)


def tcp4(src: str, dst: str, sport: int, dport: int, payload: bytes, **kw) -> bytes:
    """Return a whole IPv4/TCP packet."""
    return ipv4(src, dst, 6, tcp(src, dst, sport, dport, payload, **kw))


def rtp(seq: int, ts: int, ssrc: int, payload: bytes, pt: int = 0, marker: bool = False) -> bytes:
    """Return an RTP packet (version 2)."""
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def sip_invite(call_id: str, pad: int = 0) -> bytes:
    """Return a small SIP INVITE (optionally padded with an X-Pad header to force fragmentation)."""
    lines = [
        "INVITE sip:bob@192.0.2.20 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1",
        "From: <sip:alice@192.0.2.10>;tag=1",
        "To: <sip:bob@192.0.2.20>",
        f"Call-ID: {call_id}",
        "CSeq: 1 INVITE",
        "Content-Length: 0",
    ]
    if pad:
        lines.append("X-Pad: " + "x" * pad)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# ------------------------------------------------------------------------------------------------------
# fragmentation


def fragment_v4(packet: bytes, mtu: int) -> list[bytes]:
    """Split an IPv4 packet into fragments of at most `mtu` bytes (offsets are multiples of 8)."""
    ihl = (packet[0] & 15) * 4
    src, dst = packet[12:16], packet[16:20]
    ttl, proto, ident = packet[8], packet[9], struct.unpack("!H", packet[4:6])[0]
    body = packet[ihl:]
    step = (mtu - ihl) // 8 * 8
    if step <= 0:
        raise ValueError("mtu too small")
    out = []
    for off in range(0, len(body), step):
        chunk = body[off : off + step]
        out.append(ipv4(src, dst, proto, chunk, ttl=ttl, ident=ident, mf=off + step < len(body), frag_offset=off))
    return out


def fragment_v6(packet: bytes, mtu: int, ident: int = 0x1234) -> list[bytes]:
    """Split an IPv6 packet (no extension headers) into fragments carrying a fragment header."""
    nh, hlim = packet[6], packet[7]
    src, dst = packet[8:24], packet[24:40]
    body = packet[40:]
    step = (mtu - 48) // 8 * 8
    if step <= 0:
        raise ValueError("mtu too small")
    out = []
    for off in range(0, len(body), step):
        chunk = body[off : off + step]
        more = off + step < len(body)
        fh = struct.pack("!BBHI", nh, 0, off | int(more), ident)
        out.append(ipv6(src, dst, 44, chunk, hop_limit=hlim, ext=fh))
    return out


# ------------------------------------------------------------------------------------------------------
# link layers (each returns a frame for the given IP packet)


def _ethertype(ip: bytes) -> int:
    return 0x86DD if ip[0] >> 4 == 6 else 0x0800


def ethernet(ip: bytes, vlans: Iterable[int] = (), ethertype: int | None = None) -> bytes:
    """Ethernet II frame; `vlans` are 802.1Q tags outermost first (two tags = QinQ, outer TPID 0x88A8)."""
    tags = list(vlans)
    out = MAC_B + MAC_A
    for i, vid in enumerate(tags):
        tpid = 0x88A8 if i == 0 and len(tags) > 1 else 0x8100
        out += struct.pack("!HH", tpid, vid & 0xFFF)
    return out + struct.pack("!H", _ethertype(ip) if ethertype is None else ethertype) + ip


def sll(ip: bytes) -> bytes:
    """Linux cooked capture v1 header."""
    return struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\x00\x00", _ethertype(ip)) + ip


def sll2(ip: bytes) -> bytes:
    """Linux cooked capture v2 header."""
    return struct.pack("!HHIHBB8s", _ethertype(ip), 0, 2, 1, 0, 6, MAC_A + b"\x00\x00") + ip


def null(ip: bytes, little_endian: bool = True) -> bytes:
    """BSD loopback header (address family in host order)."""
    fam = 30 if ip[0] >> 4 == 6 else 2
    return struct.pack("<I" if little_endian else ">I", fam) + ip


def loop(ip: bytes) -> bytes:
    """OpenBSD loopback header (address family in network order)."""
    return struct.pack(">I", 24 if ip[0] >> 4 == 6 else 2) + ip


# ------------------------------------------------------------------------------------------------------
# tunnels (each returns the outer IP packet)


def outer4(proto: int, payload: bytes, ident: int = 7) -> bytes:
    """Outer IPv4 header between the documentation tunnel endpoints."""
    return ipv4(OUTER_SRC, OUTER_DST, proto, payload, ident=ident)


def outer_udp(sport: int, dport: int, payload: bytes) -> bytes:
    """Outer IPv4/UDP between the tunnel endpoints."""
    return udp4(OUTER_SRC, OUTER_DST, sport, dport, payload)


def ipip(ip: bytes) -> bytes:
    """IPv4 (proto 4) or IPv6 (proto 41) inside IPv4."""
    return outer4(41 if ip[0] >> 4 == 6 else 4, ip)


def ip_in_ipv6(ip: bytes) -> bytes:
    """IPv4 (proto 4) or IPv6 (proto 41) inside IPv6."""
    return ipv6("2001:db8::a", "2001:db8::b", 41 if ip[0] >> 4 == 6 else 4, ip)


def gre_header(proto: int, *, key: int | None = None, seq: int | None = None, csum: bool = False,
               body: bytes = b"") -> bytes:
    """GRE header (version 0) with the optional checksum, key and sequence words."""
    flags = (0x8000 if csum else 0) | (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    head = struct.pack("!HH", flags, proto)
    if csum:
        head += struct.pack("!HH", checksum(struct.pack("!HH", flags, proto) + b"\0\0\0\0" + body), 0)
    if key is not None:
        head += struct.pack("!I", key)
    if seq is not None:
        head += struct.pack("!I", seq)
    return head


def gre(ip: bytes, *, key: int | None = None, seq: int | None = None, csum: bool = False) -> bytes:
    """IP in GRE (proto 0x0800/0x86DD)."""
    return outer4(47, gre_header(_ethertype(ip), key=key, seq=seq, csum=csum, body=ip) + ip)


def gre_teb(ip: bytes, key: int | None = None, vlan: int | None = None) -> bytes:
    """Ethernet in GRE (transparent Ethernet bridging, 0x6558)."""
    return outer4(47, gre_header(0x6558, key=key) + ethernet(ip, [vlan] if vlan is not None else []))


def erspan1(ip: bytes) -> bytes:
    """ERSPAN type I: GRE 0x88BE without sequence number, Ethernet right after."""
    return outer4(47, gre_header(0x88BE) + ethernet(ip))


def erspan2(ip: bytes, seq: int = 1, session: int = 100, vlan: int = 0) -> bytes:
    """ERSPAN type II: GRE 0x88BE with sequence number, 8-byte ERSPAN header (version 1)."""
    head = struct.pack("!HHI", (1 << 12) | (vlan & 0xFFF), session & 0x3FF, 0)
    return outer4(47, gre_header(0x88BE, seq=seq) + head + ethernet(ip))


def erspan3(ip: bytes, seq: int = 1, session: int = 200, subheader: bool = False) -> bytes:
    """ERSPAN type III: GRE 0x22EB, 12-byte header (+8-byte platform subheader when `subheader`)."""
    head = struct.pack("!HHIHBB", 2 << 12, session & 0x3FF, 0x12345678, 0, 0, 1 if subheader else 0)
    if subheader:
        head += bytes(8)
    return outer4(47, gre_header(0x22EB, seq=seq) + head + ethernet(ip))


def tzsp(ip: bytes, tags: bytes = b"") -> bytes:
    """TZSP v1 'received packet' with Ethernet encapsulation over UDP 37008."""
    body = struct.pack("!BBH", 1, 0, 1) + tags + b"\x01" + ethernet(ip)
    return outer_udp(37008, 37008, body)


def l2tpv2(ip: bytes, *, length_field: bool = True, compressed: bool = False) -> bytes:
    """L2TPv2 data message with PPP over UDP 1701."""
    flags = 0x0002 | (0x4000 if length_field else 0)
    ppp = (b"\x21" if compressed else b"\xff\x03\x00\x21") if ip[0] >> 4 == 4 else b"\xff\x03\x00\x57"
    rest = struct.pack("!HH", 1, 2) + ppp + ip
    head = struct.pack("!H", flags) + (struct.pack("!H", 4 + len(rest)) if length_field else b"")
    return outer_udp(1701, 1701, head + rest)


def l2tpv3(ip: bytes, session: int = 0x1234, cookie: bytes = b"") -> bytes:
    """L2TPv3 over UDP 1701: data header, session id, optional cookie, Ethernet pseudowire."""
    return outer_udp(1701, 1701, struct.pack("!HHI", 0x0003, 0, session) + cookie + ethernet(ip))


def vxlan(ip: bytes, vni: int = 42) -> bytes:
    """VXLAN over UDP 4789."""
    return outer_udp(49152, 4789, struct.pack("!II", 0x08000000, vni << 8) + ethernet(ip))


def hep3_message(ip: bytes, ts_ns: int, *, capture_id: int = 2001, compress: bool = False,
                 proto_type: int | None = None) -> bytes:
    """Return a HEP3 message for a UDP or TCP packet (SIP as type 1 unless the payload looks like RTP)."""
    v6 = ip[0] >> 4 == 6
    if v6:
        proto, src, dst, l4 = ip[6], ip[8:24], ip[24:40], ip[40:]
    else:
        ihl = (ip[0] & 15) * 4
        proto, src, dst, l4 = ip[9], ip[12:16], ip[16:20], ip[ihl:]
    sport, dport = struct.unpack("!HH", l4[:4])
    payload = l4[8:] if proto == 17 else l4[(l4[12] >> 4) * 4 :]
    if proto_type is None:
        proto_type = 4 if payload[:1] == b"\x80" else 1

    def chunk(ctype: int, value: bytes) -> bytes:
        return struct.pack("!HHH", 0, ctype, 6 + len(value)) + value

    sec, nsec = divmod(ts_ns, 1_000_000_000)
    body = (chunk(1, bytes([10 if v6 else 2])) + chunk(2, bytes([proto]))
            + chunk(5 if v6 else 3, src) + chunk(6 if v6 else 4, dst)
            + chunk(7, struct.pack("!H", sport)) + chunk(8, struct.pack("!H", dport))
            + chunk(9, struct.pack("!I", sec)) + chunk(10, struct.pack("!I", nsec // 1000))
            + chunk(11, bytes([proto_type])) + chunk(12, struct.pack("!I", capture_id)))
    body += chunk(16, zlib.compress(payload)) if compress else chunk(15, payload)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def hep3(ip: bytes, ts_ns: int, **kw) -> bytes:
    """HEP3 over UDP to 9060 (outer IPv4/UDP packet)."""
    return outer_udp(40000, 9060, hep3_message(ip, ts_ns, **kw))


def _acdr_header(trace: int, media: int, ext: bytes, extra: int = 0) -> bytes:
    # version 0.8: 24-byte base header: ver, time(4), seq(2), src id(2), dst id(2), extra, trace point,
    # media type, extension length, session id (9)
    return (struct.pack("!BIHHHBBBB", 0x08, 0, 0, 1, 2, extra, trace, media, len(ext)) + bytes(9) + ext)


def audiocodes_sip(ip: bytes) -> bytes:
    """AudioCodes debug recording of a signalling packet (media type SIP, trace point System): the whole
    IP packet follows the header; the extension carries addresses, ports and the protocol."""
    ihl = (ip[0] & 15) * 4
    sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
    ext = ip[12:16] + ip[16:20] + struct.pack("!HHBB", sport, dport, ip[9], 0)
    return outer_udp(925, 925, _acdr_header(6, 10, ext, extra=0x08) + ip)


def audiocodes_rtp(net_addr: str, sport: int, dport: int, rtp_payload: bytes, to_net: bool) -> bytes:
    """AudioCodes recording of an RTP packet: only the network side's address is carried. `to_net`:
    trace point Dsp2Net (address = destination), else Net2Dsp (address = source)."""
    a = addr(net_addr)
    ports = struct.pack("!HH", dport, sport) if to_net else struct.pack("!HH", sport, dport)
    ext = a + ports + b"\xb8"
    return outer_udp(925, 925, _acdr_header(1 if to_net else 0, 1, ext) + rtp_payload)


def ipfix_sip_in(ts_ns: int, src: str, dst: str, sport: int, dport: int, sip: bytes, seq: int = 1) -> bytes:
    """One IPFIX message with an Oracle-style 'SIP In' set (258), standard length field."""
    sec, nsec = divmod(ts_ns, 1_000_000_000)
    body = struct.pack("!IIBBHBHBBHHHBBH4s4sHHHH", sec, nsec // 1000, 0, 1, 0, 0, 20 + 8 + len(sip), 0, 0,
                       20 + 8 + len(sip), 0, 0, 64, 17, 0, addr(src), addr(dst), dport, sport, 8 + len(sip),
                       len(sip)) + sip
    sets = struct.pack("!HH", 258, 4 + len(body)) + body
    return struct.pack("!HHIII", 10, 16 + len(sets), sec, seq, 1) + sets


def ipfix_handshake() -> bytes:
    """IPFIX handshake message (set 256)."""
    body = struct.pack("!HHHHHHIHBBBB", 1, 0, 0, 0, 0, 30, 1, 1, 1, 0, 0, 4) + b"host"
    sets = struct.pack("!HH", 256, 4 + len(body)) + body
    return struct.pack("!HHIII", 10, 16 + len(sets), 0, 0, 1) + sets


def tcp_stream(src: str, dst: str, sport: int, dport: int, chunks: Iterable[bytes], isn: int = 5000,
               ) -> list[bytes]:
    """IPv4 packets of one TCP direction: SYN, then one segment per chunk."""
    out = [tcp4(src, dst, sport, dport, b"", seq=isn, flags=0x02)]
    seq = isn + 1
    for c in chunks:
        out.append(tcp4(src, dst, sport, dport, c, seq=seq, flags=0x18))
        seq += len(c)
    return out


# ------------------------------------------------------------------------------------------------------
# one table for round-trip tests: name -> (linktype, function(ip, ts_ns) -> frame)

Encap = Callable[[bytes, int], bytes]

ENCAPS: dict[str, tuple[int, Encap, str]] = {
    # name: (linktype, wrap, tunnel name the decoder reports)
    "eth": (EN10MB, lambda ip, ts: ethernet(ip), ""),
    "vlan": (EN10MB, lambda ip, ts: ethernet(ip, [100]), ""),
    "qinq": (EN10MB, lambda ip, ts: ethernet(ip, [10, 20]), ""),
    "sll": (LINUX_SLL, lambda ip, ts: sll(ip), ""),
    "sll2": (LINUX_SLL2, lambda ip, ts: sll2(ip), ""),
    "raw": (RAW, lambda ip, ts: ip, ""),
    "raw12": (12, lambda ip, ts: ip, ""),
    "raw14": (14, lambda ip, ts: ip, ""),
    "null": (NULL, lambda ip, ts: null(ip), ""),
    "null-be": (NULL, lambda ip, ts: null(ip, little_endian=False), ""),
    "loop": (LOOP, lambda ip, ts: loop(ip), ""),
    "ipip": (EN10MB, lambda ip, ts: ethernet(ipip(ip)), "ipip"),
    "ip-in-ipv6": (EN10MB, lambda ip, ts: ethernet(ip_in_ipv6(ip)), "ipip"),
    "gre": (EN10MB, lambda ip, ts: ethernet(gre(ip)), "gre"),
    "gre-key": (EN10MB, lambda ip, ts: ethernet(gre(ip, key=0x64)), "gre"),
    "gre-key-seq-csum": (EN10MB, lambda ip, ts: ethernet(gre(ip, key=7, seq=9, csum=True)), "gre"),
    "gre-teb": (EN10MB, lambda ip, ts: ethernet(gre_teb(ip)), "gre"),
    "gre-teb-key": (EN10MB, lambda ip, ts: ethernet(gre_teb(ip, key=5)), "gre"),
    "erspan1": (EN10MB, lambda ip, ts: ethernet(erspan1(ip)), "erspan1"),
    "erspan2": (EN10MB, lambda ip, ts: ethernet(erspan2(ip)), "erspan2"),
    "erspan3": (EN10MB, lambda ip, ts: ethernet(erspan3(ip)), "erspan3"),
    "erspan3-sub": (EN10MB, lambda ip, ts: ethernet(erspan3(ip, subheader=True)), "erspan3"),
    "tzsp": (EN10MB, lambda ip, ts: ethernet(tzsp(ip)), "tzsp"),
    "tzsp-tags": (EN10MB, lambda ip, ts: ethernet(tzsp(ip, tags=b"\x00\x0a\x02\x12\x34")), "tzsp"),
    "l2tpv2": (EN10MB, lambda ip, ts: ethernet(l2tpv2(ip)), "l2tp"),
    "l2tpv2-compressed": (EN10MB, lambda ip, ts: ethernet(l2tpv2(ip, length_field=False, compressed=True)), "l2tp"),
    "l2tpv3": (EN10MB, lambda ip, ts: ethernet(l2tpv3(ip)), "l2tp"),
    "l2tpv3-cookie": (EN10MB, lambda ip, ts: ethernet(l2tpv3(ip, cookie=b"\x11\x22\x33\x44")), "l2tp"),
    "vxlan": (EN10MB, lambda ip, ts: ethernet(vxlan(ip)), "vxlan"),
    "gre-in-vlan-in-vxlan": (EN10MB, lambda ip, ts: ethernet(vxlan(gre(ip)), [7]), "vxlan"),
}
# Tunnels whose inner packet is rebuilt, not carried (the decoder synthesises the IP packet).
SYNTHETIC_ENCAPS: dict[str, tuple[int, Encap, str]] = {
    "hep3": (EN10MB, lambda ip, ts: ethernet(hep3(ip, ts)), "hep"),
    "hep3-compressed": (EN10MB, lambda ip, ts: ethernet(hep3(ip, ts, compress=True)), "hep"),
    "audiocodes-sip": (EN10MB, lambda ip, ts: ethernet(audiocodes_sip(ip)), "audiocodes"),
}


def encapsulate(name: str, ip: bytes, ts_ns: int = 0) -> tuple[int, bytes]:
    """Return (linktype, frame) carrying `ip` under encapsulation `name` (a key of ENCAPS or
    SYNTHETIC_ENCAPS). Raises KeyError for an unknown name."""
    linktype, wrap, _tunnel = ENCAPS[name] if name in ENCAPS else SYNTHETIC_ENCAPS[name]
    return linktype, wrap(ip, ts_ns)


# ------------------------------------------------------------------------------------------------------
# writers


def _open(target: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, bool]:
    if hasattr(target, "write"):
        return target, False  # type: ignore[return-value]
    return open(target, "wb"), True  # noqa: SIM115


def write_pcap(target: str | os.PathLike[str] | BinaryIO, linktype: int, records: Iterable[tuple[int, bytes]],
               *, nanosecond: bool = True, snaplen: int = 65535) -> int:
    """Write classic pcap; records are (ts_ns, frame). Frames longer than `snaplen` are cut (truncation).
    Returns the number of records written."""
    f, own = _open(target)
    try:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D if nanosecond else 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
        n = 0
        for ts, frame in records:
            sec, frac = divmod(ts, 1_000_000_000)
            if not nanosecond:
                frac //= 1000
            cut = frame[:snaplen]
            f.write(struct.pack("<IIII", sec, frac, len(cut), len(frame)) + cut)
            n += 1
        return n
    finally:
        if own:
            f.close()


def write_pcapng(target: str | os.PathLike[str] | BinaryIO, records: Iterable[tuple[int, int, bytes]]) -> int:
    """Write pcapng with ns resolution; records are (ts_ns, linktype, frame), one interface per link type.
    Returns the number of records written."""
    f, own = _open(target)

    def block(btype: int, body: bytes) -> None:
        body += b"\x00" * (-len(body) % 4)
        f.write(struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body)))

    try:
        block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
        ifaces: dict[int, int] = {}
        n = 0
        for ts, linktype, frame in records:
            if linktype not in ifaces:
                ifaces[linktype] = len(ifaces)
                block(1, struct.pack("<HHI", linktype, 0, 65535) + struct.pack("<HHB3xHH", 9, 1, 9, 0, 0))
            block(6, struct.pack("<IIIII", ifaces[linktype], ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
                  + frame)
            n += 1
        return n
    finally:
        if own:
            f.close()


# ------------------------------------------------------------------------------------------------------
# bulk traffic for benchmarks


def rtp_call_packets(n: int, *, seed: int = 1, start_ns: int = 1_763_632_800_000_000_000,
                     streams: int = 50) -> list[tuple[int, bytes]]:
    """Return `n` IPv4/UDP packets (ts_ns, ip) of `streams` interleaved G.711 RTP streams (20 ms, 160 bytes),
    with one SIP INVITE every 1000 packets."""
    rnd = random.Random(seed)
    ssrcs = [rnd.getrandbits(32) for _ in range(streams)]
    out = []
    voice = bytes(rnd.getrandbits(8) for _ in range(160))
    for i in range(n):
        ts = start_ns + i * (20_000_000 // streams)
        if i % 1000 == 0:
            ip = udp4("192.0.2.10", "192.0.2.20", 5060, 5060, sip_invite(f"bench-{i}"), ident=i & 0xFFFF)
        else:
            s = i % streams
            ip = udp4(f"192.0.2.{10 + s % 100}", f"198.51.100.{10 + s % 100}", 20000 + 2 * s, 30000 + 2 * s,
                      rtp(i // streams, (i // streams) * 160, ssrcs[s], voice), ident=i & 0xFFFF)
        out.append((ts, ip))
    return out
