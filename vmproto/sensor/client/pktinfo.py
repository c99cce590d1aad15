"""The per-packet part of packet mirroring.

`frame_offsets`: header offsets of a raw frame (spec §9.11): where the outer IP header starts
(`header_ip_encaps_offset`), where the IP header to analyse starts (`header_ip_offset`, the inner one after a
tunnel), and the outermost VLAN id (0xFFFE = no VLAN tag, as the reference sender writes).
`AreaPacker`: a block's data area built from whole capture batches (spec §9.3), in C when it can.
"""

from __future__ import annotations

import struct
from array import array

from vmproto.sensor.capture.frames import U32, FrameList
from vmproto.wire import pbkernel
from vmproto.wire.pbstore import MAX_CAPLEN, PLUS_SIZE

__all__ = ["AreaPacker", "frame_offsets", "VLAN_NOSET"]

VLAN_NOSET = 0xFFFE
_U16 = struct.Struct("!H").unpack_from
_PLUS = struct.Struct("<IIII8sHHhHHBB")
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_IPV4, _IPV6 = 0x0800, 0x86DD
_ETH_LINKS = (1,)
_RAW_LINKS = (12, 14, 101, 228, 229)
_NULL_LINKS = (0, 108)
_SLL, _SLL2 = 113, 276
_VXLAN_PORT = 4789
_MAX_DEPTH = 3
_MAX_IP_OFFSET = 1000


def _ether(frame: bytes, off: int) -> tuple[int, int] | None:
    """Return (ip offset, outermost vlan) of an Ethernet header at `off`, or None when it carries no IP."""
    n = len(frame)
    if n < off + 14:
        return None
    et = _U16(frame, off + 12)[0]
    p = off + 14
    vlan = VLAN_NOSET
    while et in _VLAN_TPIDS and n >= p + 4:
        if vlan == VLAN_NOSET:
            vlan = _U16(frame, p)[0] & 0x0FFF
        et = _U16(frame, p + 2)[0]
        p += 4
    if et in (0x8847, 0x8848):  # MPLS: skip labels to the bottom of stack, IP version from the nibble
        while n >= p + 4:
            bottom = frame[p + 2] & 0x01
            p += 4
            if bottom:
                break
        if n <= p or frame[p] >> 4 not in (4, 6):
            return None
        return p, vlan
    if et == 0x8864 and n >= p + 8:  # PPPoE session: 6-byte header + PPP protocol
        proto = _U16(frame, p + 6)[0]
        if proto not in (0x0021, 0x0057):
            return None
        return p + 8, vlan
    if et not in (_IPV4, _IPV6):
        return None
    return p, vlan


def _inner(frame: bytes, ip: int, depth: int = 0) -> int:
    """The IP header to analyse, starting from the IP header at `ip` (follows IPIP, GRE and VXLAN)."""
    n = len(frame)
    if depth >= _MAX_DEPTH or n < ip + 20:
        return ip
    version = frame[ip] >> 4
    if version == 4:
        ihl = (frame[ip] & 0x0F) * 4
        proto = frame[ip + 9]
        if _U16(frame, ip + 6)[0] & 0x3FFF:  # a fragment: its payload cannot be followed
            return ip
        p = ip + ihl
    elif version == 6 and n >= ip + 40:
        proto = frame[ip + 6]
        p = ip + 40
    else:
        return ip
    if proto in (4, 41) and n > p:
        return _inner(frame, p, depth + 1)
    if proto == 47 and n >= p + 4:
        flags = frame[p]
        ptype = _U16(frame, p + 2)[0]
        q = p + 4 + 4 * (((flags >> 7) & 1) + ((flags >> 5) & 1) + ((flags >> 4) & 1))
        if ptype in (_IPV4, _IPV6) and n > q:
            return _inner(frame, q, depth + 1)
        if ptype == 0x6558:
            got = _ether(frame, q)
            return _inner(frame, got[0], depth + 1) if got else ip
        return ip
    if proto == 17 and n >= p + 8 + 8 and _U16(frame, p + 2)[0] == _VXLAN_PORT:
        got = _ether(frame, p + 16)
        return _inner(frame, got[0], depth + 1) if got else ip
    return ip


def frame_offsets(linktype: int, frame: bytes) -> tuple[int, int, int] | None:
    """Return (header_ip_encaps_offset, header_ip_offset, vlan) for a frame of `linktype`, or None when no IP
    header is found (such packets are not shipped, spec §9.11)."""
    vlan = VLAN_NOSET
    if linktype in _ETH_LINKS:
        got = _ether(frame, 0)
        if got is None:
            return None
        outer, vlan = got
    elif linktype in _RAW_LINKS:
        outer = 0
    elif linktype in _NULL_LINKS:
        outer = 4
    elif linktype == _SLL:
        if len(frame) < 16 or _U16(frame, 14)[0] not in (_IPV4, _IPV6):
            return None
        outer = 16
    elif linktype == _SLL2:
        if len(frame) < 20 or _U16(frame, 0)[0] not in (_IPV4, _IPV6):
            return None
        outer = 20
    else:
        return None
    if len(frame) <= outer or frame[outer] >> 4 not in (4, 6) or outer > _MAX_IP_OFFSET:
        # The receiver rejects header_ip_offset > 1000 (spec §9.8 row 9): such a frame (hundreds of VLAN tags)
        # cannot be shipped in a way the central accepts.
        return None
    inner = _inner(frame, outer)
    if inner > _MAX_IP_OFFSET:  # the receiver rejects header_ip_offset > 1000 (spec §9.8)
        inner = outer
    return outer, inner, vlan


class AreaPacker:
    """The data area of the block being built (spec §9.3): `plus` header + frame per packet, in one reusable
    buffer, with the offsets of the headers.

    `pack()` takes frames of a batch until the area reaches `maxsize` (the packet that reaches it is included, as
    the reference closes a block) or the batch ends; `take()` hands the area and offsets over and starts a new
    one. The C kernel (vmproto.wire.pbkernel) does the per-packet work when it is available; the Python path
    below is the reference and gives the same bytes.
    """

    __slots__ = ("_kernel", "_stats", "area", "count", "maxsize", "offsets", "pos")

    def __init__(self, maxsize: int, *, use_kernel: bool = True) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be positive")
        self.maxsize = maxsize
        # One packet may cross maxsize: room for a whole header and a maximal frame beyond it.
        self.area = bytearray(maxsize + PLUS_SIZE + MAX_CAPLEN)
        self.offsets = array(U32, bytes(4 * (maxsize // PLUS_SIZE + 1)))
        self.pos = 0
        self.count = 0
        self._kernel = pbkernel.load() if use_kernel else None
        # frames looked at, no_ip drops, too_big drops, captured bytes taken (running totals)
        self._stats = array("Q", bytes(32))

    @property
    def full(self) -> bool:
        """True once the area reached `maxsize`: the block must be closed."""
        return self.pos >= self.maxsize

    @property
    def totals(self) -> tuple[int, int, int, int]:
        """Running totals: (frames looked at, dropped without IP, dropped too big, captured bytes taken)."""
        s = self._stats
        return s[3], s[0], s[1], s[2]

    def pack(self, linktype: int, frames: FrameList, ts_ns: array, orig_len: array, start: int) -> int:
        """Pack frames from index `start` (ts_ns: array('q'), orig_len: array of u32, same length as `frames`);
        return the index of the first frame not looked at (len(frames) when the batch is done)."""
        n = len(frames)
        k = self._kernel
        if k is not None:
            ffi = k.ffi
            state = ffi.new("uint32_t[2]", [self.pos, self.count])
            nxt = k.lib.pb_pack(ffi.from_buffer(frames.buffer), ffi.from_buffer("uint32_t[]", frames.starts),
                                ffi.from_buffer("uint32_t[]", frames.ends), ffi.from_buffer("int64_t[]", ts_ns),
                                ffi.from_buffer("uint32_t[]", orig_len), start, n, linktype, self.maxsize,
                                ffi.from_buffer(self.area), state, ffi.from_buffer("uint32_t[]", self.offsets),
                                state + 1, ffi.from_buffer("uint64_t[]", self._stats))
            self.pos, self.count = state[0], state[1]
            return nxt
        return self._pack_python(linktype, frames, ts_ns, orig_len, start)

    def _pack_python(self, linktype: int, frames: FrameList, ts_ns: array, orig_len: array, start: int) -> int:
        area, offsets, stats = self.area, self.offsets, self._stats
        pack_into = _PLUS.pack_into
        pos, count, maxsize = self.pos, self.count, self.maxsize
        i, n = start, len(frames)
        while i < n and pos < maxsize:
            frame = frames[i]
            ts, olen = ts_ns[i], orig_len[i]
            i += 1
            stats[3] += 1
            caplen = len(frame)
            if caplen > MAX_CAPLEN:
                stats[1] += 1
                continue
            got = frame_offsets(linktype, frame)
            if got is None:
                stats[0] += 1
                continue
            encaps, ip_off, vlan = got
            sec, ns = divmod(ts, 1_000_000_000)
            pack_into(area, pos, sec & 0xFFFFFFFF, ns // 1000, caplen, olen, b"", encaps, ip_off, 0, linktype, vlan,
                      0, 0)
            area[pos + PLUS_SIZE : pos + PLUS_SIZE + caplen] = frame
            offsets[count] = pos
            count += 1
            pos += PLUS_SIZE + caplen
            stats[2] += caplen
        self.pos, self.count = pos, count
        return i

    def take(self) -> tuple[memoryview, array]:
        """Return (area, offsets) of the packets packed so far and start an empty area. The memoryview is
        valid until the next `pack()`: use it (compress or copy it) before packing more."""
        area = memoryview(self.area)[: self.pos]
        offsets = self.offsets[: self.count]
        self.pos = self.count = 0
        return area, offsets
