"""TCP reassembly of the channel's connections, both directions.

Each direction becomes one byte stream numbered from 0 (the byte after the SYN). Segments may arrive out of
order, be retransmitted, or overlap: the first captured copy of every byte wins (that is what the receiving stack
delivered, and it tells us which frame carried the byte first), and a later copy that disagrees is recorded as a
conflict. The stream ends at the FIN; an RST ends it too. Bytes after a hole (segments the capture lost) are kept
apart as islands, since nothing positional can be said about them with certainty.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from vmproto.inspect.netparse import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpSegment, parse_tcp
from vmproto.inspect.pcapread import Capture

_MOD = 1 << 32
_HALF = 1 << 31


@dataclass(slots=True)
class Chunk:
    """Stream bytes [start, start+len(data)) first delivered by capture frame `frame` at time `ts`."""

    start: int
    data: bytes
    frame: int
    ts: float

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass(slots=True)
class Conflict:
    """A later copy of stream bytes that differed from the first copy."""

    offset: int
    frame: int


@dataclass(slots=True)
class Stream:
    """One direction of a connection after reassembly.

    `data` is the contiguous stream from offset 0 up to the first hole (or the end); `chunks` map every byte of
    `data` to the frame that first carried it; `hole` is (start, end) of the first missing range, if any, and
    `islands` the chunks captured after it. `missing_start` is True when no SYN was seen, so offset 0 is only the
    lowest sequence number captured, not the real start.
    """

    data: bytes = b""
    chunks: list[Chunk] = field(default_factory=list)
    hole: tuple[int, int] | None = None
    islands: list[Chunk] = field(default_factory=list)
    missing_start: bool = False
    fin: tuple[int, float] | None = None  # (frame, ts)
    rst: tuple[int, float] | None = None
    conflicts: list[Conflict] = field(default_factory=list)
    _starts: list[int] = field(default_factory=list)

    def origin(self, offset: int) -> tuple[int, float]:
        """Return (frame, ts) of the frame that first carried stream byte `offset` (which must be in `data`).

        Raises IndexError when the offset is outside the reassembled data.
        """
        if not self._starts or len(self._starts) != len(self.chunks):
            self._starts = [c.start for c in self.chunks]
        i = bisect.bisect_right(self._starts, offset) - 1
        if i < 0 or offset >= self.chunks[i].end:
            raise IndexError(f"stream offset {offset} was not captured")
        return self.chunks[i].frame, self.chunks[i].ts


@dataclass(slots=True)
class Connection:
    """A TCP connection to the channel port. `client_port` is how key files name it (`conn`)."""

    client: str
    client_port: int
    server: str
    server_port: int
    first_frame: int
    first_ts: float
    syn_seen: bool
    c2s: Stream
    s2c: Stream


class _DirectionBuilder:
    """Collects one direction's segments; `build()` turns them into a Stream."""

    def __init__(self) -> None:
        self.segments: list[TcpSegment] = []
        self.isn: int | None = None

    def add(self, seg: TcpSegment) -> None:
        if seg.flags & TCP_SYN and self.isn is None:
            self.isn = seg.seq
        self.segments.append(seg)

    def build(self) -> Stream:
        stream = Stream()
        if self.isn is not None:
            base = (self.isn + 1) % _MOD
        else:
            stream.missing_start = True
            base = self._lowest_seq()
            if base is None:
                return stream
        end_limit: int | None = None
        covered: list[list[int]] = []  # disjoint sorted [start, end) ranges already filled
        pieces: list[Chunk] = []
        for seg in self.segments:
            rel = (seg.seq - base) % _MOD
            if rel >= _HALF:
                rel -= _MOD
            if seg.flags & TCP_SYN:
                rel += 1  # a SYN occupies one sequence number before the data
            payload = seg.payload
            if rel < 0:  # keep-alive probe or bytes from before the capture's start: drop what lies before 0
                payload = payload[-rel:]
                rel = 0
            if end_limit is not None and rel + len(payload) > end_limit:
                payload = payload[: max(0, end_limit - rel)]
            if payload:
                self._fill(rel, payload, seg, covered, pieces, stream)
            if seg.flags & TCP_FIN and stream.fin is None:
                stream.fin = (seg.frame, seg.ts)
                end_limit = rel + len(seg.payload) if end_limit is None else end_limit
            if seg.flags & TCP_RST and stream.rst is None:
                stream.rst = (seg.frame, seg.ts)
        pieces.sort(key=lambda c: c.start)
        pos = 0
        prefix: list[Chunk] = []
        for i, chunk in enumerate(pieces):
            if chunk.start != pos:
                stream.hole = (pos, chunk.start)
                stream.islands = pieces[i:]
                break
            prefix.append(chunk)
            pos = chunk.end
        stream.chunks = prefix
        stream.data = b"".join(c.data for c in prefix)
        return stream

    def _lowest_seq(self) -> int | None:
        seqs = [s.seq for s in self.segments if s.payload or s.flags & TCP_FIN]
        if not seqs:
            return None
        ref = seqs[0]
        # Sequence numbers wrap: compare them relative to the first one seen.
        return min(seqs, key=lambda s: ((s - ref + _HALF) % _MOD) - _HALF)

    @staticmethod
    def _fill(
        rel: int, payload: bytes, seg: TcpSegment, covered: list[list[int]], pieces: list[Chunk], stream: Stream
    ) -> None:
        start, end = rel, rel + len(payload)
        i = bisect.bisect_left(covered, [start, start])
        if i > 0 and covered[i - 1][1] > start:
            i -= 1
        pos = start
        j = i
        while j < len(covered) and covered[j][0] < end:
            c_start, c_end = covered[j]
            if c_start > pos:
                pieces.append(Chunk(pos, payload[pos - rel : c_start - rel], seg.frame, seg.ts))
            overlap_from, overlap_to = max(pos, c_start), min(end, c_end)
            if overlap_to > overlap_from:
                _check_conflict(overlap_from, overlap_to, payload[overlap_from - rel : overlap_to - rel], seg, pieces, stream)
            pos = max(pos, c_end)
            j += 1
        if pos < end:
            pieces.append(Chunk(pos, payload[pos - rel :], seg.frame, seg.ts))
        # Merge [start, end) with the ranges it touched.
        new_start = min(start, covered[i][0]) if i < j else start
        new_end = max(end, covered[j - 1][1]) if i < j else end
        covered[i:j] = [[new_start, new_end]]
        # Also merge with direct neighbours so the list stays minimal.
        if i > 0 and covered[i - 1][1] == covered[i][0]:
            covered[i - 1][1] = covered[i][1]
            del covered[i]
            i -= 1
        if i + 1 < len(covered) and covered[i][1] == covered[i + 1][0]:
            covered[i][1] = covered[i + 1][1]
            del covered[i + 1]


def _check_conflict(start: int, end: int, copy: bytes, seg: TcpSegment, pieces: list[Chunk], stream: Stream) -> None:
    """Record a conflict when a retransmitted copy differs from the bytes first captured."""
    for chunk in pieces:
        if chunk.end <= start or chunk.start >= end:
            continue
        lo, hi = max(start, chunk.start), min(end, chunk.end)
        if chunk.data[lo - chunk.start : hi - chunk.start] != copy[lo - start : hi - start]:
            stream.conflicts.append(Conflict(lo, seg.frame))
            return


def reassemble(segments: list[TcpSegment], server_port: int) -> list[Connection]:
    """Group segments to or from `server_port` into connections and reassemble both directions.

    A SYN from a client port whose previous connection already carried a FIN or RST starts a new connection
    (port reuse). Returns connections in the order of their first captured segment.
    """
    order: list[tuple[Connection, _DirectionBuilder, _DirectionBuilder]] = []
    live: dict[tuple[str, int, str], int] = {}
    closed: set[int] = set()
    for seg in segments:
        if seg.dport == server_port:
            key, to_server = (seg.src, seg.sport, seg.dst), True
        elif seg.sport == server_port:
            key, to_server = (seg.dst, seg.dport, seg.src), False
        else:
            continue
        idx = live.get(key)
        is_new_syn = to_server and seg.flags & TCP_SYN and not seg.flags & TCP_ACK
        if idx is not None and is_new_syn and idx in closed:
            idx = None
        if idx is None:
            conn = Connection(
                client=key[0], client_port=key[1], server=key[2], server_port=server_port,
                first_frame=seg.frame, first_ts=seg.ts, syn_seen=bool(is_new_syn), c2s=Stream(), s2c=Stream(),
            )
            order.append((conn, _DirectionBuilder(), _DirectionBuilder()))
            idx = len(order) - 1
            live[key] = idx
        _, c2s, s2c = order[idx]
        (c2s if to_server else s2c).add(seg)
        if seg.flags & (TCP_FIN | TCP_RST):
            closed.add(idx)
    result = []
    for conn, c2s, s2c in order:
        conn.c2s = c2s.build()
        conn.s2c = s2c.build()
        result.append(conn)
    return result


def connections(capture: Capture, server_port: int) -> list[Connection]:
    """Return the reassembled connections to `server_port` found in a capture, in the order they were opened."""
    segments = [seg for seg in map(parse_tcp, capture.frames) if seg is not None]
    return reassemble(segments, server_port)
