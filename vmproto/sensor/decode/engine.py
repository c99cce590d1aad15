"""The packet decoder: link layer -> IP (fragments, extension headers) -> tunnels -> `DecodedPacket`.

Decoding rules follow the reference sniffer where it is right and go further where it loses packets (each
place is marked "reference:"). Malformed input never raises out of `Decoder.decode_batch`: it is counted in
`Decoder.stats` (``error.<kind>``) and skipped.

Hot path: with the C kernel (kernel.py) a batch is parsed in C into columns of offsets and fields and
the records are built without per-packet bytecode; frames it does not take come back to `_frame`. Without
it, Ethernet + IPv4 (no options, not a fragment) + UDP on a port that no tunnel decoder watches is handled
inline in `_decode_python` with two `struct` calls and one record; everything else goes through `_frame`.
Buffers stay `bytes` addressed by offsets; only the record's fields are sliced.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from . import linktypes as lt
from .audiocodes import RTP_LIKE_MEDIA, SIGNALLING_MEDIA, parse_acdr
from .dedup import Deduplicator
from .errors import DecodeError
from .fragments import FragmentReassembler
from .hep import MAGIC as HEP_MAGIC
from .hep import HepStreamDecoder, hep_to_record, parse_hep3, split_hep3
from .ipfix import IpfixStreamDecoder
from .kernel import BatchKernel, use_kernel
from .options import DecodeOptions
from .record import DecodedPacket
from .stats import DecodeStats
from .synth import build_ip_packet

_new = tuple.__new__
_U16 = struct.Struct("!H").unpack_from
_U16X2 = struct.Struct("!HH").unpack_from
_U16X3 = struct.Struct("!HHH").unpack_from
_FAST_V4 = struct.Struct("!H2xHBB").unpack_from  # at IP+2: total length, flags/offset, TTL, protocol
_V4 = struct.Struct("!HHHBB").unpack_from  # at IP+2: total length, id, flags/offset, TTL, protocol
_V6 = struct.Struct("!HBB").unpack_from  # at IP+4: payload length, next header, hop limit
_TCP = struct.Struct("!HHIIBB").unpack_from
_VLAN_TPIDS = frozenset({0x8100, 0x88A8, 0x9100})
_ETH_IP = frozenset({0x0800, 0x86DD})
# IPv6 extension headers walked to reach the transport header (44, fragment, is handled separately).
_V6_EXT = frozenset({0, 43, 60, 135, 139, 140, 253, 254})
_ZERO4 = bytes(4)
_ZERO16 = bytes(16)


class _Malformed(Exception):
    """Internal: the packet is malformed at one layer; `args[0]` is the counter kind."""


class _TcpFlows:
    """In-order byte streams of TCP flows carrying HEP or IPFIX, for decoding them from captures."""

    def __init__(self, max_flows: int, max_buffer: int) -> None:
        self.max_flows = max_flows
        self.max_buffer = max_buffer
        self._flows: dict[bytes, list] = {}  # key -> [next seq or None, stream decoder]

    def segment(self, key: bytes, kind: str, seq: int, flags: int, data: bytes, stats: DecodeStats):
        """Return (decoder, bytes to feed) for one segment; bytes may be empty (retransmission)."""
        flows = self._flows
        flow = flows.get(key)
        if flow is None:
            if len(flows) >= self.max_flows:
                del flows[next(iter(flows))]
                stats.inc("stream.evicted")
            decoder = HepStreamDecoder(self.max_buffer) if kind == "hep" else IpfixStreamDecoder(self.max_buffer)
            flow = flows[key] = [None, decoder]
        if flags & 0x02:  # SYN: the stream starts after it
            flow[0] = (seq + 1) & 0xFFFFFFFF
            return flow[1], data
        nxt = flow[0]
        if nxt is None:
            nxt = seq
        diff = (seq - nxt) & 0xFFFFFFFF
        if diff == 0:
            pass
        elif diff >= 0x80000000:  # starts before what we have: retransmission or overlap
            overlap = (nxt - seq) & 0xFFFFFFFF
            data = data[overlap:]
            seq = nxt
        else:
            stats.inc("stream.gap")  # lost segment: let the stream decoder resynchronise
        flow[0] = (seq + len(data)) & 0xFFFFFFFF
        if flags & 0x05:  # FIN or RST ends the flow
            del flows[key]
        return flow[1], data


class Decoder:
    """Decodes frames of any supported link type into `DecodedPacket` records.

    One instance holds the state that spans packets (fragments, duplicates, HEP/IPFIX TCP streams) and
    the counters in `stats`. Not thread-safe: use one decoder per capture thread.

    `kernel` chooses the batch path: "auto" (default, or `$VMPROTO_DECODE_KERNEL`: the C kernel when it
    builds, else pure Python), "c" (raises `KernelUnavailable` without it) or "python". Both give identical
    records and counters. Raises `ValueError` for another choice.
    """

    def __init__(self, options: DecodeOptions | None = None, stats: DecodeStats | None = None, *,
                 kernel: str | None = None) -> None:
        self.options = o = options or DecodeOptions()
        self.stats = stats if stats is not None else DecodeStats()
        self.frags = FragmentReassembler(self.stats, o.frag_max_datagrams, o.frag_max_bytes, o.frag_timeout_ns)
        self.dedup = (Deduplicator(self.stats, o.deduplicate_ipheader, o.dedup_window_ns, o.dedup_max_entries)
                      if o.deduplicate else None)
        self._streams = _TcpFlows(1024, o.tcp_stream_max_bytes)
        udp = {o.udp_port_l2tp, o.udp_port_tzsp, o.udp_port_vxlan}
        if o.audiocodes:
            udp.add(o.udp_port_audiocodes)
        if o.hep:
            udp.add(o.hep_bind_port)
        udp.discard(0)
        # Any UDP packet with one of these ports leaves the fast path to be checked for a tunnel.
        self._udp_watch = frozenset(udp)
        tcp = set()
        if o.audiocodes:
            tcp.add(o.tcp_port_audiocodes)
        if o.hep:
            tcp.add(o.hep_bind_port)
        if o.ipfix:
            tcp.add(o.ipfix_bind_port)
        tcp.discard(0)
        self._tcp_watch = frozenset(tcp)
        # The C kernel takes the common frames of a batch; everything else comes back to `_frame`.
        self._kernel = (BatchKernel(o, self.stats, self._udp_watch, self._tcp_watch) if use_kernel(kernel)
                        else None)

    @property
    def uses_kernel(self) -> bool:
        """True when batches go through the C kernel (False: the pure-Python decoder alone)."""
        return self._kernel is not None

    # ----------------------------------------------------------------------------------------------
    # entry points

    def decode_batch(self, linktype: int, ts_list: Sequence[int], frames: Sequence[bytes]) -> list[DecodedPacket]:
        """Decode frames captured on one link type; `ts_list[i]` is the time of `frames[i]` in ns.

        Returns the records in capture order (a frame may give 0, 1 or several records). Never raises for
        bad packets (see `stats`); raises `DecodeError` ("batch_mismatch") when the two lists differ in length.
        """
        if len(ts_list) != len(frames):
            raise DecodeError("batch_mismatch", f"{len(ts_list)} timestamps for {len(frames)} frames")
        out = None
        if self._kernel is not None and frames:
            out = self._kernel.decode(linktype, ts_list, frames, self._slow_frame)
        if out is None:
            out = self._decode_python(linktype, ts_list, frames)
        if self.dedup is not None:
            is_dup = self.dedup.is_duplicate
            out = [rec for rec in out if not is_dup(rec)]
        stats = self.stats
        stats.inc("frames", len(frames))
        stats.inc("records", len(out))
        return out

    def _slow_frame(self, linktype: int, ts: int, f: bytes, out: list) -> None:
        """Decode one frame in Python, appending its records to `out`; malformed input is only counted."""
        try:
            self._frame(linktype, ts, f, out)
        except _Malformed as exc:
            self.stats.inc("error." + exc.args[0])
        except (struct.error, IndexError, ValueError):
            # A bounds check we missed: still counted, never raised.
            self.stats.inc("error.malformed")

    def _decode_python(self, linktype: int, ts_list: Sequence[int], frames: Sequence[bytes]) -> list[DecodedPacket]:
        """The reference decoder loop: records of all frames in order (before duplicate suppression)."""
        out: list[DecodedPacket] = []
        append = out.append
        slow = self._slow_frame
        watch = self._udp_watch
        fast = linktype == lt.EN10MB
        DP = DecodedPacket
        fast_v4 = _FAST_V4
        u16x3 = _U16X3
        for ts, f in zip(ts_list, frames, strict=True):
            # Inline: Ethernet + IPv4 without options, not a fragment, + UDP on a port no tunnel watches.
            if fast and len(f) >= 42 and f[12] == 8 and f[13] == 0 and f[14] == 0x45:
                tot, frag, ttl, proto = fast_v4(f, 16)
                end = 14 + tot
                if proto == 17 and not frag & 0x3FFF and end <= len(f):
                    sport, dport, ulen = u16x3(f, 34)
                    if ulen == tot - 20 and ulen >= 8 and sport not in watch and dport not in watch:
                        append(_new(DP, (ts, 4, f[26:30], f[30:34], 17, sport, dport, f[42:end], ttl, f[14:end],
                                         0, 0, -1, "")))
                        continue
            slow(linktype, ts, f, out)
        return out

    def decode_ip(self, ts_ns: int, packet: bytes, vlan: int = -1, tunnel: str = "") -> list[DecodedPacket]:
        """Decode one bare IP packet (for listeners that receive IP packets, e.g. in tests or bridges).

        Returns its records; malformed input is counted in `stats` and gives an empty list.
        """
        out: list[DecodedPacket] = []
        try:
            self._ip(ts_ns, packet, 0, len(packet), vlan, tunnel, 0, out)
        except _Malformed as exc:
            self.stats.inc("error." + exc.args[0])
        except (struct.error, IndexError, ValueError):
            self.stats.inc("error.malformed")
        if self.dedup is not None:
            is_dup = self.dedup.is_duplicate
            out = [rec for rec in out if not is_dup(rec)]
        return out

    # ----------------------------------------------------------------------------------------------
    # link layer

    def _frame(self, linktype: int, ts: int, f: bytes, out: list) -> None:
        n = len(f)
        vlan = -1
        if linktype == lt.EN10MB:
            off, et, vlan = _ether(f, 0, n)
        elif linktype == lt.LINUX_SLL:
            if n < 16:
                raise _Malformed("sll_truncated")
            et = _U16(f, 14)[0]
            off = 16
            if et in _VLAN_TPIDS:
                off, et, vlan = _vlan_tags(f, off, n, et)
        elif linktype == lt.LINUX_SLL2:
            if n < 20:
                raise _Malformed("sll2_truncated")
            et = _U16(f, 0)[0]
            off = 20
            if et in _VLAN_TPIDS:
                off, et, vlan = _vlan_tags(f, off, n, et)
        elif linktype in (lt.RAW, lt.RAW_BSD12, lt.RAW_BSD14, lt.IPV4, lt.IPV6):
            off = 0
            et = 0x0800
        elif linktype == lt.NULL or linktype == lt.LOOP:
            if n < 4:
                raise _Malformed("null_truncated")
            fam_be = int.from_bytes(f[:4], "big")
            fam = fam_be if linktype == lt.LOOP else (fam_be if fam_be < 256 else int.from_bytes(f[:4], "little"))
            if fam == 2:
                et = 0x0800
            elif fam in lt.AF_INET6_VALUES:
                et = 0x86DD
            else:
                self.stats.inc("skip.non_ip")
                return
            off = 4
        else:
            raise _Malformed("linktype_unsupported")
        if et == 0x0800 or et == 0x86DD:
            self._ip(ts, f, off, n, vlan, "", 0, out)
        else:
            self.stats.inc("skip.non_ip")

    # ----------------------------------------------------------------------------------------------
    # IP

    def _ip(self, ts: int, buf: bytes, off: int, n: int, vlan: int, tunnel: str, depth: int, out: list) -> None:
        if off >= n:
            raise _Malformed("ip_truncated")
        v = buf[off] >> 4
        if v == 4:
            self._ipv4(ts, buf, off, n, vlan, tunnel, depth, out)
        elif v == 6:
            if not self.options.ipv6:
                self.stats.inc("skip.ipv6_disabled")
                return
            self._ipv6(ts, buf, off, n, vlan, tunnel, depth, out)
        else:
            raise _Malformed("ip_version")

    def _ipv4(self, ts: int, buf: bytes, off: int, n: int, vlan: int, tunnel: str, depth: int, out: list) -> None:
        if off + 20 > n:
            raise _Malformed("ipv4_truncated")
        ihl = (buf[off] & 15) << 2
        if ihl < 20 or off + ihl > n:
            raise _Malformed("ipv4_header")
        tot, ident, frag, ttl, proto = _V4(buf, off + 2)
        if tot == 0:
            # TCP segmentation offload on the capturing host leaves the length 0: trust the capture.
            self.stats.inc("skip.ipv4_zero_length")
            tot = n - off
        if tot < ihl:
            raise _Malformed("ipv4_length")
        end = off + tot
        if end > n:
            if frag & 0x3FFF:
                raise _Malformed("fragment_truncated")
            self.stats.inc("truncated")
            end = n
        if frag & 0x3FFF:
            if not self.options.udpfrag:
                self.stats.inc("skip.fragment")
                return
            whole = self.frags.add_v4(ts, buf, off, ihl, end, ident, frag)
            if whole is None:
                return
            buf, off, end = whole, 0, len(whole)
        self._l4(ts, buf, off, off + ihl, end, 4, buf[off + 12 : off + 16], buf[off + 16 : off + 20], proto, ttl,
                 vlan, tunnel, depth, out)

    def _ipv6(self, ts: int, buf: bytes, off: int, n: int, vlan: int, tunnel: str, depth: int, out: list) -> None:
        if off + 40 > n:
            raise _Malformed("ipv6_truncated")
        plen, nh, hlim = _V6(buf, off + 4)
        if plen == 0:
            raise _Malformed("ipv6_jumbogram")
        end = off + 40 + plen
        if end > n:
            self.stats.inc("truncated")
            end = n
        src = buf[off + 8 : off + 24]
        dst = buf[off + 24 : off + 40]
        p = off + 40
        while True:
            if nh in _V6_EXT or nh == 51:
                if p + 8 > end:
                    raise _Malformed("ipv6_ext_header")
                size = (buf[p + 1] + 2) * 4 if nh == 51 else (buf[p + 1] + 1) * 8
                nh = buf[p]
                p += size
                if p > end:
                    raise _Malformed("ipv6_ext_header")
            elif nh == 44:
                if p + 8 > end:
                    raise _Malformed("ipv6_ext_header")
                offflags = _U16(buf, p + 2)[0]
                if offflags & 0xFFF9 == 0:  # atomic fragment (RFC 6946): not really fragmented
                    nh = buf[p]
                    p += 8
                    continue
                if not self.options.udpfrag:
                    self.stats.inc("skip.fragment")
                    return
                whole = self.frags.add_v6(ts, buf, off, p, end, src, dst)
                if whole is not None:
                    self._ipv6(ts, whole, 0, len(whole), vlan, tunnel, depth, out)
                return
            else:
                break
        self._l4(ts, buf, off, p, end, 6, src, dst, nh, hlim, vlan, tunnel, depth, out)

    # ----------------------------------------------------------------------------------------------
    # transport

    def _l4(self, ts: int, buf: bytes, ipoff: int, p: int, end: int, ver: int, src: bytes, dst: bytes, proto: int,
            ttl: int, vlan: int, tunnel: str, depth: int, out: list) -> None:
        if proto == 17:
            if p + 8 > end:
                raise _Malformed("udp_truncated")
            sport, dport, ulen = _U16X3(buf, p)
            if ulen < 8:
                raise _Malformed("udp_length")
            pend = p + ulen if p + ulen < end else end  # ignore bytes past the UDP length (padding)
            if (sport in self._udp_watch or dport in self._udp_watch) and self._udp_tunnel(
                    ts, buf, p, pend, sport, dport, vlan, tunnel, depth, out):
                return
            self._emit(_new(DecodedPacket, (ts, ver, src, dst, 17, sport, dport, buf[p + 8 : pend], ttl,
                                            buf[ipoff:end], 0, 0, vlan, tunnel)), out)
        elif proto == 6:
            if p + 20 > end:
                raise _Malformed("tcp_truncated")
            sport, dport, seq, _ack, doff, flags = _TCP(buf, p)
            doff = (doff >> 4) << 2
            if doff < 20 or p + doff > end:
                raise _Malformed("tcp_header")
            if (sport in self._tcp_watch or dport in self._tcp_watch) and self._tcp_tunnel(
                    ts, buf, p + doff, end, src, dst, sport, dport, seq, flags, vlan, tunnel, depth, out):
                return
            self._emit(_new(DecodedPacket, (ts, ver, src, dst, 6, sport, dport, buf[p + doff : end], ttl,
                                            buf[ipoff:end], seq, flags, vlan, tunnel)), out)
        elif proto == 4 or proto == 41:
            self._enter(depth)
            self.stats.inc("tunnel.ipip")
            self._ip(ts, buf, p, end, vlan, tunnel or "ipip", depth + 1, out)
        elif proto == 47:
            self._enter(depth)
            self._gre(ts, buf, p, end, vlan, tunnel, depth, out)
        elif proto == 132:
            self._sctp(ts, buf, ipoff, p, end, ver, src, dst, ttl, vlan, tunnel, out)
        elif proto == 1 or proto == 58:
            self.stats.inc("skip.icmp")
        else:
            self.stats.inc("skip.ip_proto")

    def _sctp(self, ts: int, buf: bytes, ipoff: int, p: int, end: int, ver: int, src: bytes, dst: bytes, ttl: int,
              vlan: int, tunnel: str, out: list) -> None:
        # One record per DATA chunk (type 0): SIP over SCTP arrives as chunk user data.
        # reference: SIP over SCTP gives no CDR there.
        if p + 12 > end:
            raise _Malformed("sctp_truncated")
        sport, dport = _U16X2(buf, p)
        q = p + 12
        found = False
        while q + 4 <= end:
            ctype = buf[q]
            clen = _U16(buf, q + 2)[0]
            if clen < 4 or q + clen > end:
                raise _Malformed("sctp_chunk")
            if ctype == 0 and clen > 16:
                found = True
                self._emit(_new(DecodedPacket, (ts, ver, src, dst, 132, sport, dport, buf[q + 16 : q + clen], ttl,
                                                buf[ipoff:end], 0, 0, vlan, tunnel)), out)
            q += (clen + 3) & ~3
        if not found:
            self.stats.inc("skip.sctp_no_data")

    def _emit(self, rec: DecodedPacket, out: list) -> None:
        # Duplicate suppression runs over the finished output (same order, same result): see decode_batch.
        out.append(rec)

    def _enter(self, depth: int) -> None:
        if depth >= self.options.max_tunnel_depth:
            raise _Malformed("tunnel_depth")

    # ----------------------------------------------------------------------------------------------
    # tunnels

    def _inner_ether(self, ts: int, buf: bytes, q: int, end: int, vlan: int, tunnel: str, depth: int,
                     out: list) -> None:
        off, et, v = _ether(buf, q, end)
        if v >= 0:
            vlan = v  # the innermost VLAN tag wins, as with QinQ
        if et == 0x0800 or et == 0x86DD:
            self._ip(ts, buf, off, end, vlan, tunnel, depth + 1, out)
        else:
            self.stats.inc("skip.non_ip")

    def _gre(self, ts: int, buf: bytes, p: int, end: int, vlan: int, tunnel: str, depth: int, out: list) -> None:
        # reference: skips the key/sequence words only for 0x6558/0x88BE/0x22EB and never honours the
        # checksum flag, so GRE with a key or checksum and an IP payload is lost there. We honour all flags.
        if p + 4 > end:
            raise _Malformed("gre_truncated")
        flags, proto = _U16X2(buf, p)
        version = flags & 7
        if version != 0:
            self.stats.inc(f"unknown_tunnel.gre_version_{version}")
            return
        if flags & 0x4000:
            self.stats.inc("unknown_tunnel.gre_routing")
            return
        q = p + 4 + (4 if flags & 0x8000 else 0) + (4 if flags & 0x2000 else 0) + (4 if flags & 0x1000 else 0)
        if q > end:
            raise _Malformed("gre_truncated")
        if proto == 0x0800 or proto == 0x86DD:
            self.stats.inc("tunnel.gre")
            self._ip(ts, buf, q, end, vlan, tunnel or "gre", depth + 1, out)
        elif proto == 0x6558:
            self.stats.inc("tunnel.gre")
            self._inner_ether(ts, buf, q, end, vlan, tunnel or "gre", depth, out)
        elif proto == 0x88BE:
            if flags & 0x1000:  # with a sequence number: ERSPAN type II (8-byte header)
                if q + 8 > end:
                    raise _Malformed("erspan_truncated")
                ev = buf[q] >> 4
                if ev == 2:  # type III header under the type II protocol number
                    q = _erspan3(buf, q, end)
                    name = "erspan3"
                else:
                    q += 8
                    name = "erspan2"
            else:
                name = "erspan1"  # type I: no ERSPAN header
            self.stats.inc("tunnel." + name)
            self._inner_ether(ts, buf, q, end, vlan, tunnel or name, depth, out)
        elif proto == 0x22EB:
            q = _erspan3(buf, q, end)
            self.stats.inc("tunnel.erspan3")
            self._inner_ether(ts, buf, q, end, vlan, tunnel or "erspan3", depth, out)
        elif proto == 0x8847 or proto == 0x8848:
            q = _mpls(buf, q, end)
            self.stats.inc("tunnel.gre")
            self._ip(ts, buf, q, end, vlan, tunnel or "gre", depth + 1, out)
        else:
            self.stats.inc(f"unknown_tunnel.gre_proto_{proto:04x}")

    def _udp_tunnel(self, ts: int, buf: bytes, p: int, end: int, sport: int, dport: int, vlan: int, tunnel: str,
                    depth: int, out: list) -> bool:
        """Strip a UDP tunnel if the datagram is one; return False to treat it as plain UDP."""
        o = self.options
        q = p + 8
        if o.udp_port_vxlan and dport == o.udp_port_vxlan:
            if end - q < 8 + 14 or not buf[q] & 0x08:
                return False
            self._enter(depth)
            self.stats.inc("tunnel.vxlan")
            self._inner_ether(ts, buf, q + 8, end, vlan, tunnel or "vxlan", depth, out)
            return True
        if o.udp_port_tzsp and (dport == o.udp_port_tzsp or sport == o.udp_port_tzsp):
            return self._tzsp(ts, buf, q, end, vlan, tunnel, depth, out)
        if o.udp_port_l2tp and (dport == o.udp_port_l2tp or sport == o.udp_port_l2tp):
            return self._l2tp(ts, buf, q, end, vlan, tunnel, depth, out)
        if o.hep and (dport == o.hep_bind_port or sport == o.hep_bind_port):
            if buf[q : q + 4] != HEP_MAGIC:
                return False
            self._enter(depth)
            try:
                messages, used = split_hep3(buf[q:end])
                if used != end - q:
                    raise DecodeError("hep_bad_length", "datagram ends inside a message")
                for raw in messages:
                    self._hep_record(ts, parse_hep3(raw), vlan, out)
            except DecodeError as exc:
                raise _Malformed(exc.kind) from None
            return True
        if o.audiocodes and (dport == o.udp_port_audiocodes or sport == o.udp_port_audiocodes):
            return self._audiocodes(ts, buf, q, end, vlan, tunnel, depth, out)
        return False

    def _hep_record(self, ts: int, msg, vlan: int, out: list) -> None:
        try:
            rec = hep_to_record(msg, ts, vlan)
        except DecodeError as exc:
            self.stats.inc("skip." + exc.kind)
            return
        self.stats.inc("tunnel.hep")
        self._emit(rec, out)

    def _tzsp(self, ts: int, buf: bytes, q: int, end: int, vlan: int, tunnel: str, depth: int, out: list) -> bool:
        # reference: scans at most 5 bytes for the end tag; we walk the tagged fields properly.
        if end - q < 5 or buf[q] != 1:
            return False
        ptype = buf[q + 1]
        encap = _U16(buf, q + 2)[0]
        if ptype > 1:  # 2+: configuration, keep-alive ... carry no packet
            self.stats.inc("skip.tzsp_control")
            return True
        r = q + 4
        while True:
            if r >= end:
                raise _Malformed("tzsp_tags")
            tag = buf[r]
            if tag == 1:
                r += 1
                break
            if tag == 0:
                r += 1
                continue
            if r + 2 > end:
                raise _Malformed("tzsp_tags")
            r += 2 + buf[r + 1]
        self._enter(depth)
        if encap != 1:
            self.stats.inc(f"unknown_tunnel.tzsp_encap_{encap}")
            return True
        self.stats.inc("tunnel.tzsp")
        self._inner_ether(ts, buf, r, end, vlan, tunnel or "tzsp", depth, out)
        return True

    def _l2tp(self, ts: int, buf: bytes, q: int, end: int, vlan: int, tunnel: str, depth: int, out: list) -> bool:
        # reference: only L2TPv2 data with PPP "ff 03 00 21" and both ports 1701. We also take one port,
        # optional fields, compressed PPP headers, IPv6 over PPP, and L2TPv3 (Ethernet pseudowire).
        if end - q < 8:
            return False
        flags = _U16(buf, q)[0]
        version = flags & 0xF
        if version == 2:
            if flags & 0x8000:
                self.stats.inc("skip.l2tp_control")
                return True
            r = q + 2 + (2 if flags & 0x4000 else 0) + 4 + (4 if flags & 0x0800 else 0)
            if flags & 0x0200:
                if r + 2 > end:
                    raise _Malformed("l2tp_truncated")
                r += 2 + _U16(buf, r)[0]
            if r + 2 > end:
                raise _Malformed("l2tp_truncated")
            if buf[r] == 0xFF and buf[r + 1] == 0x03:
                r += 2
            if r >= end:
                raise _Malformed("l2tp_truncated")
            if buf[r] & 1:  # protocol field compression: one byte
                ppp = buf[r]
                r += 1
            else:
                if r + 2 > end:
                    raise _Malformed("l2tp_truncated")
                ppp = _U16(buf, r)[0]
                r += 2
            self._enter(depth)
            if ppp == 0x21 or ppp == 0x57:
                self.stats.inc("tunnel.l2tp")
                self._ip(ts, buf, r, end, vlan, tunnel or "l2tp", depth + 1, out)
            elif ppp >= 0x8000:  # LCP, IPCP, authentication ...: PPP's own control traffic
                self.stats.inc("skip.l2tp_ppp_control")
            else:
                self.stats.inc(f"unknown_tunnel.l2tp_ppp_{ppp:04x}")
            return True
        if version == 3:
            if flags & 0x8000:
                self.stats.inc("skip.l2tp_control")
                return True
            session = int.from_bytes(buf[q + 4 : q + 8], "big")
            if session == 0:
                self.stats.inc("skip.l2tp_control")
                return True
            # The cookie (0, 4 or 8 bytes) and the optional 4-byte sublayer are configured out of band:
            # take the first offset where a plausible Ethernet frame with an IP payload starts.
            base = q + 8
            for extra in (0, 4, 8, 12):
                r = base + extra
                if r + 15 > end:
                    break
                et = _U16(buf, r + 12)[0]
                nib = buf[r + 14] >> 4
                if (et == 0x0800 and nib == 4) or (et == 0x86DD and nib == 6) or et in _VLAN_TPIDS:
                    self._enter(depth)
                    self.stats.inc("tunnel.l2tp")
                    self._inner_ether(ts, buf, r, end, vlan, tunnel or "l2tp", depth, out)
                    return True
            self.stats.inc("unknown_tunnel.l2tpv3_payload")
            return True
        return False

    def _audiocodes(self, ts: int, buf: bytes, q: int, end: int, vlan: int, tunnel: str, depth: int,
                    out: list) -> bool:
        try:
            h = parse_acdr(buf, q, end)
        except DecodeError as exc:
            raise _Malformed(exc.kind) from None
        if h is None:
            return False
        self._enter(depth)
        data = q + h.header_total
        if h.media_type in SIGNALLING_MEDIA and h.ip_proto in (6, 17):
            self.stats.inc("tunnel.audiocodes")
            self._ip(ts, buf, data, end, vlan, tunnel or "audiocodes", depth + 1, out)
        elif h.media_type in RTP_LIKE_MEDIA and (h.src or h.dst):
            version = 6 if h.ipv6 else 4
            zero = _ZERO16 if h.ipv6 else _ZERO4
            src = h.src or zero
            dst = h.dst or zero
            payload = buf[data:end]
            packet = build_ip_packet(version, src, dst, 17, h.sport, h.dport, payload)
            self.stats.inc("tunnel.audiocodes")
            self._emit(DecodedPacket(ts, version, src, dst, 17, h.sport, h.dport, payload, 64, packet, 0, 0, vlan,
                                     tunnel or "audiocodes"), out)
        else:
            self.stats.inc(f"skip.audiocodes_media_{h.media_type}")
        return True

    def _tcp_tunnel(self, ts: int, buf: bytes, q: int, end: int, src: bytes, dst: bytes, sport: int, dport: int,
                    seq: int, flags: int, vlan: int, tunnel: str, depth: int, out: list) -> bool:
        o = self.options
        if o.audiocodes and (dport == o.tcp_port_audiocodes or sport == o.tcp_port_audiocodes):
            if q == end:
                return False
            return self._audiocodes(ts, buf, q, end, vlan, tunnel, depth, out)
        if o.hep and dport == o.hep_bind_port:
            kind = "hep"
        elif o.ipfix and dport == o.ipfix_bind_port:
            kind = "ipfix"
        else:
            # The collector's direction carries only ACKs (and IPFIX handshake answers): consume it.
            self.stats.inc("skip.stream_reverse")
            return True
        key = src + dst + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
        decoder, data = self._streams.segment(key, kind, seq, flags, buf[q:end], self.stats)
        if data:
            try:
                records = decoder.feed(data)
            except DecodeError as exc:
                raise _Malformed(exc.kind) from None
            if kind == "hep":
                for msg in records:
                    self._hep_record(ts, msg, vlan, out)
            else:
                for rec in records:
                    self.stats.inc("tunnel.ipfix")
                    self._emit(rec, out)
        else:
            self.stats.inc("skip.stream_no_data")
        return True


def _vlan_tags(buf: bytes, off: int, n: int, et: int) -> tuple[int, int, int]:
    vlan = -1
    while et in _VLAN_TPIDS:
        if off + 4 > n:
            raise _Malformed("vlan_truncated")
        tci, et = _U16X2(buf, off)
        vlan = tci & 0xFFF
        off += 4
    return off, et, vlan


def _ether(buf: bytes, off: int, n: int) -> tuple[int, int, int]:
    """Return (offset of the L3 header, its ethertype, innermost VLAN id or -1) of the frame at `off`."""
    if off + 14 > n:
        raise _Malformed("ethernet_truncated")
    et = _U16(buf, off + 12)[0]
    off += 14
    vlan = -1
    if et in _VLAN_TPIDS:
        off, et, vlan = _vlan_tags(buf, off, n, et)
    if et == 0x8864:  # PPPoE session
        if off + 8 > n:
            raise _Malformed("pppoe_truncated")
        ppp = _U16(buf, off + 6)[0]
        off += 8
        et = 0x0800 if ppp == 0x21 else 0x86DD if ppp == 0x57 else 0
    elif et == 0x8847 or et == 0x8848:
        off = _mpls(buf, off, n)
        et = 0x86DD if buf[off] >> 4 == 6 else 0x0800
    return off, et, vlan


def _mpls(buf: bytes, off: int, n: int) -> int:
    while True:
        if off + 4 >= n:
            raise _Malformed("mpls_truncated")
        bottom = buf[off + 2] & 1
        off += 4
        if bottom:
            return off


def _erspan3(buf: bytes, q: int, end: int) -> int:
    if q + 12 > end:
        raise _Malformed("erspan_truncated")
    return q + 12 + (8 if buf[q + 11] & 1 else 0)  # O flag: 8-byte platform-specific subheader follows
