"""Suppression of packets seen twice (the reference's ``deduplicate`` option).

The key is an md5 digest, as in the reference's default ``deduplicate = yes`` (md5):

* ``deduplicate_ipheader = yes`` (the reference default): IP header and payload, with TTL/hop limit, the
  IPv4 header checksum and the UDP checksum zeroed (``deduplicate_ipheader_ignore_ttl`` and
  ``deduplicate_udpheader_ignore_checksum`` are on by default there), so a copy seen after one more router
  hop still matches.
* ``ip_only``: the addresses plus everything after the IP header.
* ``no``: the L4 payload only.

Unlike the reference's fixed hash table, memory is bounded by `max_entries` (oldest dropped first) and a
digest is forgotten `window_ns` after it was first seen (packet time).
"""

from __future__ import annotations

from hashlib import md5

from .record import DecodedPacket
from .stats import DecodeStats

_ZERO1 = b"\x00"
_ZERO2 = b"\x00\x00"


def dedup_key(rec: DecodedPacket, mode: str) -> bytes:
    """Return the md5 digest that identifies `rec` under `deduplicate_ipheader` mode `mode`."""
    ip = rec.ip_packet
    if mode == "no":
        return md5(rec.payload).digest()
    if rec.ip_version == 4:
        ihl = (ip[0] & 15) << 2
        udp = rec.proto == 17 and ip[9] == 17
    else:
        # Extension headers stay inside the hashed "rest"; the UDP checksum is only zeroed when UDP
        # follows the fixed header directly.
        ihl = 40
        udp = ip[6] == 17
    h = md5()
    if mode == "ip_only":
        h.update(rec.src)
        h.update(rec.dst)
        h.update(ip[ihl:])
        return h.digest()
    if rec.ip_version == 4:
        h.update(ip[:8])
        h.update(_ZERO1)
        h.update(ip[9:10])
        h.update(_ZERO2)
        h.update(ip[12:ihl])
    else:
        h.update(ip[:7])
        h.update(_ZERO1)
        h.update(ip[8:ihl])
    if udp and len(ip) >= ihl + 8:
        h.update(ip[ihl : ihl + 6])
        h.update(_ZERO2)
        h.update(ip[ihl + 8 :])
    else:
        h.update(ip[ihl:])
    return h.digest()


class Deduplicator:
    """Remembers digests of recent packets; `is_duplicate` tells whether a record was seen in the window."""

    def __init__(self, stats: DecodeStats, mode: str = "yes", window_ns: int = 10_000_000_000,
                 max_entries: int = 262_144) -> None:
        self.stats = stats
        self.mode = mode
        self.window_ns = window_ns
        self.max_entries = max_entries
        self._seen: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def is_duplicate(self, rec: DecodedPacket) -> bool:
        """Return True (and count ``dedup.dropped``) when `rec` repeats a packet seen within the window."""
        seen = self._seen
        limit = rec.ts_ns - self.window_ns
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] >= limit:
                break
            del seen[oldest]
        key = dedup_key(rec, self.mode)
        if key in seen:
            self.stats.inc("dedup.dropped")
            return True
        if len(seen) >= self.max_entries:
            del seen[next(iter(seen))]
            self.stats.inc("dedup.evicted")
        seen[key] = rec.ts_ns
        return False
