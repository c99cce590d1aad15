"""Record TCP conversations held over real sockets and write them as a pcap, as tcpdump on `lo` would show them.

Used by the demo and by tests: capturing on a live interface needs privileges a newcomer may not have, while
recording at the stream layer needs none. Each `send_all` becomes one TCP segment (split at the MSS), with a
correct three-way handshake, sequence/ack numbers, and FIN or RST at the end, in Ethernet/IPv4 frames (DLT 1).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dpkt

MSS = 65483  # what Linux uses on loopback (MTU 65536 minus headers)


@dataclass
class _Segment:
    ts: float
    direction: str  # "c2s" | "s2c"
    flags: int
    data: bytes = b""


@dataclass
class TcpConversation:
    client: tuple[str, int]
    server: tuple[str, int]
    segments: list[_Segment] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _add(self, ts: float, direction: str, flags: int, data: bytes = b"") -> None:
        with self._lock:
            self.segments.append(_Segment(ts, direction, flags, bytes(data)))

    def open(self, ts: float) -> None:
        self._add(ts, "c2s", dpkt.tcp.TH_SYN)
        self._add(ts, "s2c", dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        self._add(ts, "c2s", dpkt.tcp.TH_ACK)

    def data(self, ts: float, direction: str, data: bytes) -> None:
        for i in range(0, len(data), MSS):
            self._add(ts, direction, dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, data[i:i + MSS])

    def fin(self, ts: float, direction: str) -> None:
        self._add(ts, direction, dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)

    def rst(self, ts: float, direction: str) -> None:
        self._add(ts, direction, dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK)


def _frames(conv: TcpConversation) -> list[tuple[float, bytes]]:
    ends = {"c2s": (conv.client, conv.server), "s2c": (conv.server, conv.client)}
    seq = {"c2s": 1_000_000, "s2c": 2_000_000}
    frames = []
    for seg in conv.segments:
        (src, sport), (dst, dport) = ends[seg.direction]
        other = "s2c" if seg.direction == "c2s" else "c2s"
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq[seg.direction] & 0xFFFFFFFF,
                           ack=seq[other] & 0xFFFFFFFF if seg.flags & dpkt.tcp.TH_ACK else 0,
                           flags=seg.flags, win=65535, data=seg.data)
        ip = dpkt.ip.IP(src=bytes(map(int, src.split("."))), dst=bytes(map(int, dst.split("."))),
                        p=dpkt.ip.IP_PROTO_TCP, ttl=64, data=tcp)
        ip.len = len(ip.pack_hdr()) + len(bytes(tcp))
        eth = dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x00" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        frames.append((seg.ts, bytes(eth)))
        advance = len(seg.data) + (1 if seg.flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)
        seq[seg.direction] += advance
    return frames


def write_pcap(path: str | Path, conversations: list[TcpConversation]) -> int:
    """Write every conversation's frames, merged in time order; returns the number of frames."""
    frames = [f for conv in conversations for f in _frames(conv)]
    frames.sort(key=lambda f: f[0])  # stable: keeps each conversation's order for equal timestamps
    with open(path, "wb") as fh:
        writer = dpkt.pcap.Writer(fh, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB, nano=True)
        for ts, frame in frames:
            writer.writepkt(frame, ts=ts)
    return len(frames)


class RecordingStream:
    """Wrap a trio Stream so everything sent and received lands in `conv` (direction from our point of view).

    `local_is_client` says whether the wrapped end is the TCP client. The clock is injected (`clock()`), so the
    recorder itself never decides time.
    """

    def __init__(self, stream: Any, conv: TcpConversation, *, local_is_client: bool, clock: Any) -> None:
        self._stream = stream
        self._conv = conv
        self._out = "c2s" if local_is_client else "s2c"
        self._in = "s2c" if local_is_client else "c2s"
        self._clock = clock
        self._closed = False

    async def send_all(self, data: bytes) -> None:
        self._conv.data(self._clock(), self._out, bytes(data))
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self._stream.receive_some(max_bytes)
        if data:
            self._conv.data(self._clock(), self._in, data)
        return data

    async def send_eof(self) -> None:
        self._conv.fin(self._clock(), self._out)
        await self._stream.send_eof()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._conv.fin(self._clock(), self._out)
        await self._stream.aclose()


def conversation_for(client: tuple[str, int], server: tuple[str, int], ts: float) -> TcpConversation:
    conv = TcpConversation(client, server)
    conv.open(ts)
    return conv


__all__ = ["MSS", "RecordingStream", "TcpConversation", "conversation_for", "write_pcap"]
