"""IPv4 and IPv6 fragment reassembly with bounded memory.

Bounds: at most `max_datagrams` datagrams in flight and `max_bytes` of fragment data held; the oldest
datagram is evicted first. A datagram whose first fragment is older than `timeout_ns` (packet time, not wall
time) is dropped when a later fragment arrives. Overlapping fragments are accepted, the later copy wins
(counted as ``frag.overlap``).
"""

from __future__ import annotations

import struct

from .stats import DecodeStats
from .synth import inet_checksum

_MAX_DATAGRAM = 65535


class _Datagram:
    __slots__ = ("first_ts", "header", "total", "pieces", "held")

    def __init__(self, first_ts: int) -> None:
        self.first_ts = first_ts
        self.header: bytes | None = None  # IPv4: header of the offset-0 fragment; IPv6: rebuilt fixed header
        self.total = -1  # payload length, known once the last fragment arrived
        self.pieces: list[tuple[int, bytes]] = []
        self.held = 0


class FragmentReassembler:
    """Collects fragments; `add_v4`/`add_v6` return the whole datagram once complete, else None."""

    def __init__(self, stats: DecodeStats, max_datagrams: int = 1024, max_bytes: int = 8 << 20,
                 timeout_ns: int = 30_000_000_000) -> None:
        self.stats = stats
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout_ns = timeout_ns
        self._flight: dict[bytes, _Datagram] = {}
        self._held = 0

    @property
    def in_flight(self) -> int:
        """Number of datagrams waiting for fragments."""
        return len(self._flight)

    @property
    def held_bytes(self) -> int:
        """Bytes of fragment data currently held."""
        return self._held

    def _drop(self, key: bytes, counter: str) -> None:
        dg = self._flight.pop(key)
        self._held -= dg.held
        self.stats.inc(counter)

    def _expire(self, ts: int) -> None:
        flight = self._flight
        limit = ts - self.timeout_ns
        while flight:
            key = next(iter(flight))
            if flight[key].first_ts >= limit:
                break
            self._drop(key, "frag.timeout")

    def _add(self, ts: int, key: bytes, start: int, data: bytes, more: bool, header: bytes | None) -> _Datagram | None:
        self.stats.inc("frag.in")
        self._expire(ts)
        flight = self._flight
        dg = flight.get(key)
        if dg is None:
            while len(flight) >= self.max_datagrams:
                self._drop(next(iter(flight)), "frag.evicted")
            dg = flight[key] = _Datagram(ts)
        end = start + len(data)
        if end > _MAX_DATAGRAM or (dg.total >= 0 and end > dg.total) or (not more and end < dg.total):
            self._drop(key, "frag.oversize" if end > _MAX_DATAGRAM else "frag.inconsistent")
            return None
        if header is not None:
            dg.header = header
        if not more:
            dg.total = end
        for s, d in dg.pieces:
            if s < end and start < s + len(d):
                self.stats.inc("frag.overlap")
                break
        dg.pieces.append((start, data))
        dg.held += len(data)
        self._held += len(data)
        while self._held > self.max_bytes and flight:
            oldest = next(iter(flight))
            self._drop(oldest, "frag.evicted")
            if oldest == key:
                return None
        if dg.total < 0 or dg.header is None:
            return None
        dg.pieces.sort(key=lambda p: p[0])
        pos = 0
        for s, d in dg.pieces:
            if s > pos:
                return None
            pos = max(pos, s + len(d))
        if pos < dg.total:
            return None
        del flight[key]
        self._held -= dg.held
        self.stats.inc("frag.reassembled")
        return dg

    @staticmethod
    def _join(dg: _Datagram) -> bytearray:
        body = bytearray(dg.total)
        for s, d in dg.pieces:  # sorted by offset: on overlap the later-starting copy wins
            body[s : s + len(d)] = d
        return body

    def add_v4(self, ts: int, buf: bytes, off: int, ihl: int, end: int, ident: int, frag: int) -> bytes | None:
        """Add the IPv4 fragment `buf[off:end]`; return the reassembled packet when complete."""
        start = (frag & 0x1FFF) << 3
        more = bool(frag & 0x2000)
        key = b"4" + buf[off + 9 : off + 10] + buf[off + 12 : off + 20] + ident.to_bytes(2, "big")
        header = buf[off : off + ihl] if start == 0 else None
        dg = self._add(ts, key, start, buf[off + ihl : end], more, header)
        if dg is None:
            return None
        assert dg.header is not None
        head = bytearray(dg.header)
        if len(head) + dg.total > _MAX_DATAGRAM:
            self.stats.inc("frag.oversize")
            return None
        struct.pack_into("!H", head, 2, len(head) + dg.total)
        head[6] = head[7] = 0  # no longer a fragment
        struct.pack_into("!H", head, 10, 0)
        struct.pack_into("!H", head, 10, inet_checksum(bytes(head)))
        return bytes(head) + bytes(self._join(dg))

    def add_v6(self, ts: int, buf: bytes, off: int, frag_hdr: int, end: int, src: bytes, dst: bytes) -> bytes | None:
        """Add the IPv6 fragment whose fragment header is at `frag_hdr`; return the whole packet when complete.

        The reassembled packet is a fixed IPv6 header followed by the reassembled payload; extension
        headers before the fragment header (hop-by-hop, routing) are not carried over.
        """
        next_header, offflags, ident = struct.unpack_from("!BxHI", buf, frag_hdr)
        start = offflags & 0xFFF8
        more = bool(offflags & 1)
        key = b"6" + src + dst + ident.to_bytes(4, "big")
        header = None
        if start == 0:
            header = buf[off : off + 4] + bytes((next_header, buf[off + 7])) + src + dst
        dg = self._add(ts, key, start, buf[frag_hdr + 8 : end], more, header)
        if dg is None:
            return None
        assert dg.header is not None
        h = dg.header
        return h[:4] + struct.pack("!HBB", dg.total, h[4], h[5]) + h[6:] + bytes(self._join(dg))
