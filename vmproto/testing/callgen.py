"""SIP/RTP call generator: DecodedPacket-shaped records and raw IPv4 packets for tests and benchmarks.

`generate_call(CallSpec(...))` returns the packets of one call in capture order: INVITE/100/180 then the
outcome (answered: 200/ACK, RTP both ways, optional re-INVITE to a new caller port, BYE/200; busy: 486/ACK;
cancel: CANCEL/200/487/ACK). RTP impairments (loss, capture jitter, reordering) are drawn from a seeded
`random.Random`, so the same spec gives the same packets, and the exact impairments are reported back.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from vmproto.testing.pcapgen import checksum

__all__ = ["CallSpec", "GenPacket", "GeneratedCall", "generate_call", "CODECS"]

#: codec name -> (payload type, rtpmap text, payload bytes per 20 ms)
CODECS = {"pcmu": (0, "PCMU/8000", 160), "pcma": (8, "PCMA/8000", 160), "g729": (18, "G729/8000", 20)}


class GenPacket(NamedTuple):
    """Same fields and order as vmproto.sensor.decode.record.DecodedPacket."""

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


@dataclass(slots=True)
class CallSpec:
    """What to generate. Times in seconds; `loss` is a probability per RTP packet; `jitter_ms` the maximum
    capture-time jitter; `reorder` the probability of swapping a packet with its successor."""

    call_id: str = "callgen-1@192.0.2.10"
    outcome: str = "answered"  # answered | busy | cancel
    codec: str = "pcmu"
    rtp_seconds: float = 3.0
    loss: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    reinvite: bool = False
    seed: int = 1
    start_s: float = 1_763_632_800.0
    caller_ip: bytes = bytes([192, 0, 2, 10])
    callee_ip: bytes = bytes([198, 51, 100, 20])
    caller_rtp_port: int = 10000
    callee_rtp_port: int = 20000
    ttl: int = 64

    def __post_init__(self) -> None:
        if self.outcome not in ("answered", "busy", "cancel"):
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}")
        if not (0.0 <= self.loss < 1.0 and 0.0 <= self.reorder < 1.0 and self.jitter_ms >= 0):
            raise ValueError("loss/reorder must be in [0, 1) and jitter_ms >= 0")


@dataclass(slots=True)
class GeneratedCall:
    """The packets plus what was done to the RTP, per direction ("a" caller->callee, "b" the reverse)."""

    packets: list[GenPacket]
    sent: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    lost_seqs: dict[str, list[int]] = field(default_factory=dict)
    reordered: dict[str, int] = field(default_factory=dict)


def _udp_packet(ts_ns: int, src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, ttl: int,
                ident: int) -> GenPacket:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ident & 0xFFFF, 0, ttl, 17, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return GenPacket(ts_ns, 4, src, dst, 17, sport, dport, payload, ttl, hdr + udp, 0, 0, -1, "")


def _ip(addr: bytes) -> str:
    return ".".join(str(b) for b in addr)


class _Builder:
    def __init__(self, spec: CallSpec) -> None:
        self.spec = spec
        self.packets: list[GenPacket] = []
        self.ident = 1

    def add(self, t: float, from_caller: bool, payload: bytes, sport: int = 5060, dport: int = 5060) -> None:
        s = self.spec
        src, dst = (s.caller_ip, s.callee_ip) if from_caller else (s.callee_ip, s.caller_ip)
        # Capture times at microsecond resolution, like a classic pcap.
        self.packets.append(_udp_packet(int(round(t * 1e6)) * 1000, src, dst, sport, dport, payload, s.ttl, self.ident))
        self.ident += 1

    def sip(self, t: float, from_caller: bool, first_line: str, cseq: str, to_tag: bool, sdp_port: int = 0) -> None:
        s = self.spec
        caller, callee = _ip(s.caller_ip), _ip(s.callee_ip)
        pt, rtpmap, _ = CODECS[s.codec]
        body = ""
        if sdp_port:
            addr = caller if from_caller else callee
            body = (f"v=0\r\no=- 1 1 IN IP4 {addr}\r\ns=callgen\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
                    f"m=audio {sdp_port} RTP/AVP {pt}\r\na=rtpmap:{pt} {rtpmap}\r\na=ptime:20\r\na=sendrecv\r\n")
        lines = [first_line, f"Via: SIP/2.0/UDP {caller}:5060;branch=z9hG4bK{cseq.split()[0]}x",
                 f'From: "Alice" <sip:1000@{caller}>;tag=ftag1',
                 f"To: <sip:2000@{callee}>" + (";tag=ttag1" if to_tag else ""),
                 f"Call-ID: {s.call_id}", f"CSeq: {cseq}"]
        if first_line.startswith("INVITE"):
            lines.append("User-Agent: callgen")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        self.add(t, from_caller, ("\r\n".join(lines) + "\r\n\r\n" + body).encode())


def _rtp_direction(spec: CallSpec, rng: random.Random, t0: float, seconds: float, src_port: int, dst_port: int,
                   from_caller: bool, ssrc: int, seq0: int, ts0: int) -> tuple[list[tuple[float, bool, bytes, int, int]],
                                                                               int, list[int], int]:
    pt, _, size = CODECS[spec.codec]
    n = int(round(seconds / 0.02))
    out: list[tuple[float, bool, bytes, int, int]] = []
    lost: list[int] = []
    for i in range(n):
        seq = (seq0 + i) & 0xFFFF
        # The first packets stay intact: the reference does not count loss before its probation ends.
        if i >= 3 and i < n - 1 and rng.random() < spec.loss:
            lost.append(seq)
            continue
        hdr = struct.pack("!BBHII", 0x80, pt | (0x80 if i == 0 else 0), seq, (ts0 + i * 160) & 0xFFFFFFFF, ssrc)
        t = t0 + i * 0.02 + rng.uniform(0, spec.jitter_ms / 1000.0)
        out.append((t, from_caller, hdr + bytes(size), src_port, dst_port))
    swaps = 0
    i = 3
    while i < len(out) - 2:
        if rng.random() < spec.reorder:
            a, b = out[i], out[i + 1]
            # Swap the packets but keep the capture times, so the later sequence number is captured first.
            out[i], out[i + 1] = (a[0], *b[1:]), (b[0], *a[1:])
            swaps += 1
            i += 2
        else:
            i += 1
    return out, n, lost, swaps


def generate_call(spec: CallSpec) -> GeneratedCall:
    """Return the packets of one call described by `spec` (capture order) and the impairments applied."""
    rng = random.Random(spec.seed)
    b = _Builder(spec)
    t = spec.start_s
    b.sip(t, True, f"INVITE sip:2000@{_ip(spec.callee_ip)}:5060 SIP/2.0", "1 INVITE", False, spec.caller_rtp_port)
    b.sip(t + 0.01, False, "SIP/2.0 100 Trying", "1 INVITE", False)
    b.sip(t + 0.05, False, "SIP/2.0 180 Ringing", "1 INVITE", True)
    result = GeneratedCall(b.packets)
    if spec.outcome == "busy":
        b.sip(t + 1.0, False, "SIP/2.0 486 Busy Here", "1 INVITE", True)
        b.sip(t + 1.01, True, f"ACK sip:2000@{_ip(spec.callee_ip)}:5060 SIP/2.0", "1 ACK", True)
        return result
    if spec.outcome == "cancel":
        b.sip(t + 2.0, True, f"CANCEL sip:2000@{_ip(spec.callee_ip)}:5060 SIP/2.0", "1 CANCEL", False)
        b.sip(t + 2.01, False, "SIP/2.0 200 OK", "1 CANCEL", True)
        b.sip(t + 2.02, False, "SIP/2.0 487 Request Terminated", "1 INVITE", True)
        b.sip(t + 2.03, True, f"ACK sip:2000@{_ip(spec.callee_ip)}:5060 SIP/2.0", "1 ACK", True)
        return result
    b.sip(t + 1.0, False, "SIP/2.0 200 OK", "1 INVITE", True, spec.callee_rtp_port)
    b.sip(t + 1.01, True, f"ACK sip:2000@{_ip(spec.callee_ip)}:5060 SIP/2.0", "1 ACK", True)
    media: list[tuple[float, bool, bytes, int, int]] = []
    legs = [(spec.rtp_seconds, spec.caller_rtp_port)]
    if spec.reinvite:
        legs = [(spec.rtp_seconds / 2, spec.caller_rtp_port), (spec.rtp_seconds / 2, spec.caller_rtp_port + 100)]
    t_rtp = t + 1.08
    for leg, (secs, cport) in enumerate(legs):
        if leg:
            b.sip(t_rtp - 0.03, True, f"INVITE sip:2000@{_ip(spec.callee_ip)}:5060 SIP/2.0", "2 INVITE", True, cport)
            b.sip(t_rtp - 0.02, False, "SIP/2.0 200 OK", "2 INVITE", True, spec.callee_rtp_port)
            b.sip(t_rtp - 0.01, True, f"ACK sip:2000@{_ip(spec.callee_ip)}:5060 SIP/2.0", "2 ACK", True)
        for key, from_caller, sp, dp, ssrc, off in (("a", True, cport, spec.callee_rtp_port, 0x1111, 0.0),
                                                     ("b", False, spec.callee_rtp_port, cport, 0x2222, 0.003)):
            pk, n, lost, swaps = _rtp_direction(spec, rng, t_rtp + off, secs, sp, dp, from_caller, ssrc,
                                                1000 + leg * 5000, 50_000 + leg * 100_000)
            media += pk
            result.sent[key] = result.sent.get(key, 0) + n
            result.lost[key] = result.lost.get(key, 0) + len(lost)
            result.lost_seqs.setdefault(key, []).extend(lost)
            result.reordered[key] = result.reordered.get(key, 0) + swaps
        t_rtp += secs + 0.05
    for tm, from_caller, payload, sp, dp in sorted(media, key=lambda m: m[0]):
        b.add(tm, from_caller, payload, sp, dp)
    b.sip(t_rtp, True, f"BYE sip:2000@{_ip(spec.callee_ip)}:5060 SIP/2.0", "3 BYE", True)
    b.sip(t_rtp + 0.01, False, "SIP/2.0 200 OK", "3 BYE", True)
    return result
