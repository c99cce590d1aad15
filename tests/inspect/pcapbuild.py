"""Build pcap files in tests: Ethernet/IPv4/TCP frames written by hand, with control over segmentation,
reordering and retransmission (what tcprecord, which models a clean loopback, does not give)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def _ip(addr: str) -> bytes:
    return bytes(int(x) for x in addr.split("."))


@dataclass
class Packet:
    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes = b""

    def frame(self, linktype: int = 1) -> bytes:
        tcp = struct.pack("!HHIIBBHHH", self.sport, self.dport, self.seq & 0xFFFFFFFF, self.ack & 0xFFFFFFFF,
                          5 << 4, self.flags, 65535, 0, 0) + self.payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, _ip(self.src),
                         _ip(self.dst)) + tcp
        if linktype == 1:
            return b"\x00" * 12 + b"\x08\x00" + ip
        if linktype == 113:  # Linux cooked v1: packet type, ARPHRD, addr len, addr(8), protocol
            return struct.pack("!HHH8sH", 0, 772, 6, b"\x00" * 8, 0x0800) + ip
        if linktype == 0:  # BSD NULL: family in host (little-endian here) byte order
            return struct.pack("<I", 2) + ip
        raise ValueError(linktype)


@dataclass
class Conversation:
    """A TCP connection: `send()` appends segments; `packets` can then be reordered or duplicated by the test."""

    client: str = "127.0.0.1"
    cport: int = 40000
    server: str = "127.0.0.1"
    sport: int = 60024
    isn_c: int = 0xFFFFFF00  # close to the wrap, so reassembly must handle sequence wrap-around
    isn_s: int = 5000
    ts: float = 1_700_000_000.0
    packets: list[Packet] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next = {"c2s": self.isn_c + 1, "s2c": self.isn_s + 1}

    def _tick(self) -> float:
        self.ts = round(self.ts + 0.001, 6)
        return self.ts

    def _pkt(self, direction: str, seq: int, flags: int, payload: bytes = b"") -> Packet:
        other = "s2c" if direction == "c2s" else "c2s"
        if direction == "c2s":
            ends = (self.client, self.cport, self.server, self.sport)
        else:
            ends = (self.server, self.sport, self.client, self.cport)
        return Packet(self._tick(), *ends, seq, self.next[other], flags, payload)

    def handshake(self) -> None:
        self.packets.append(self._pkt("c2s", self.isn_c, SYN))
        self.packets.append(self._pkt("s2c", self.isn_s, SYN | ACK))
        self.packets.append(self._pkt("c2s", self.next["c2s"], ACK))

    def send(self, direction: str, data: bytes, mss: int = 1460) -> list[Packet]:
        out = []
        for i in range(0, len(data), mss):
            out.append(self._pkt(direction, self.next[direction], PSH | ACK, data[i : i + mss]))
            self.next[direction] += len(data[i : i + mss])
        self.packets.extend(out)
        return out

    def close(self, direction: str, flags: int = FIN | ACK) -> None:
        self.packets.append(self._pkt(direction, self.next[direction], flags))
        self.next[direction] += 1


def write_pcap(packets: list[Packet], linktype: int = 1) -> bytes:
    """Return a little-endian microsecond pcap holding `packets` in the given order."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for p in packets:
        frame = p.frame(linktype)
        sec = int(p.ts)
        usec = round((p.ts - sec) * 1_000_000)
        out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
    return b"".join(out)
