"""Pure-Python readers of classic pcap (µs and ns) and pcapng, yielding `PacketBatch`es.

This is the replay path: it reads large chunks and walks the record headers, with the packet engine's C
kernel when it is available (batches then carry a `FrameList` over the chunk: no per-frame copy) or with
`struct.unpack_from`; both beat calling libpcap through cffi per packet (see bench/decode.py). `vmproto.sensor.capture.libpcap` offers the
libpcap reader as well, for formats this module does not know.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from .batch import PacketBatch
from .errors import CaptureFormatError
from .frames import FrameList

CHUNK = 8 << 20
MAX_FRAME = 1 << 20  # larger captured lengths mean a corrupt file, not a jumbo frame
_NS = 1_000_000_000

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
_BOM = 0x1A2B3C4D


def _ts_to_ns_factor(resol: int) -> tuple[int, int, int]:
    """Return (multiplier, divisor, shift) turning pcapng timestamp units into ns for if_tsresol `resol`."""
    if resol & 0x80:
        return _NS, 1, resol & 0x7F
    if resol <= 9:
        return 10 ** (9 - resol), 1, 0
    return 1, 10 ** (resol - 9), 0


class _Iface:
    __slots__ = ("linktype", "snaplen", "mul", "div", "shift", "offset_ns")

    def __init__(self, linktype: int, snaplen: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.mul, self.div, self.shift = 1000, 1, 0  # default resolution: microseconds
        self.offset_ns = 0

    def ns(self, units: int) -> int:
        v = units * self.mul
        if self.shift:
            v >>= self.shift
        if self.div != 1:
            v //= self.div
        return v + self.offset_ns


class CaptureFileReader:
    """Reads a pcap or pcapng file (by magic) in batches of up to `batch_size` frames.

    Attributes: `format` ("pcap" or "pcapng"), `linktype` (of the first interface), `nanosecond` (the
    file's own precision is ns; pcapng reports per interface, this is the first one's), `snaplen`.
    Iterating yields `PacketBatch`es; a pcapng batch never mixes link types. Raises `CaptureFormatError`
    for an unknown magic or a corrupt record (a truncated last record is ignored, as libpcap does).
    """

    def __init__(self, source: str | os.PathLike[str] | BinaryIO, batch_size: int = 4096) -> None:
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        self._own = not hasattr(source, "read")
        self._f: BinaryIO = open(source, "rb") if self._own else source  # type: ignore[arg-type]  # noqa: SIM115
        self.batch_size = batch_size
        self.truncated_tail = False
        try:
            head = self._read_exact(4)
            if len(head) < 4:
                raise CaptureFormatError("file shorter than a capture header", 0)
            magic_le = struct.unpack("<I", head)[0]
            if magic_le == PCAPNG_SHB:
                self.format = "pcapng"
                self._buf = bytearray(head)
                self._ifaces: list[_Iface] = []
                self._endian = "<"
                self._prime_pcapng()
            else:
                self.format = "pcap"
                self._open_pcap(head)
        except BaseException:
            self.close()
            raise

    def _read_exact(self, n: int) -> bytes:
        return self._f.read(n)

    # -- classic pcap ------------------------------------------------------------------------------

    def _open_pcap(self, head: bytes) -> None:
        for endian in ("<", ">"):
            magic = struct.unpack(endian + "I", head)[0]
            if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
                break
        else:
            raise CaptureFormatError(f"unknown capture magic {head.hex()}", 0)
        rest = self._read_exact(20)
        if len(rest) < 20:
            raise CaptureFormatError("truncated pcap file header", 4)
        _vmaj, _vmin, _zone, _sig, snaplen, network = struct.unpack(endian + "HHiIII", rest)
        self.nanosecond = magic == PCAP_MAGIC_NS
        self.snaplen = snaplen
        self.linktype = network & 0x03FFFFFF
        self._endian = endian
        self._pos = 24

    def _iter_pcap(self) -> Iterator[PacketBatch]:
        scan = _pcap_scanner()
        if scan is not None:
            return self._iter_pcap_scan(scan)
        return self._iter_pcap_python()

    def _iter_pcap_scan(self, scan) -> Iterator[PacketBatch]:  # noqa: ANN001 - kernel.pcap_scanner()'s function
        # Frames stay in the read chunk: each batch is a `FrameList` over it, so the decoder reads them in
        # place and slices records straight from the chunk. A batch never spans two chunks.
        mult = 1 if self.nanosecond else 1000
        swapped = self._endian == ">"
        linktype = self.linktype
        size = self.batch_size
        f = self._f
        try:
            seekable = f.seekable()
        except (AttributeError, OSError):
            seekable = False
        tail = b""
        base = self._pos
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            data = tail + chunk if tail else chunk
            pos = 0
            while True:
                ts_l, starts, ends, ol_l, pos_next, corrupt = scan(data, pos, swapped, mult, MAX_FRAME, size)
                if ts_l:
                    yield PacketBatch(linktype, ts_l, FrameList(data, starts, ends), ol_l)
                pos = pos_next
                if corrupt:
                    incl = struct.unpack_from(self._endian + "I", data, pos + 8)[0]
                    raise CaptureFormatError(f"record claims {incl} captured bytes", base + pos)
                if len(ts_l) < size:
                    break
            base += pos
            rest = len(data) - pos
            if seekable and 0 < rest < len(data) and len(chunk) == CHUNK:
                # Read the cut record again with the next chunk instead of copying the whole chunk onto
                # the tail (8 MiB per chunk, measured ~10% of the read+decode time).
                f.seek(-rest, io.SEEK_CUR)
                tail = b""
            else:
                tail = data[pos:]
        if tail:
            self.truncated_tail = True

    def _iter_pcap_python(self) -> Iterator[PacketBatch]:
        rec = struct.Struct(self._endian + "IIII").unpack_from
        mult = 1 if self.nanosecond else 1000
        linktype = self.linktype
        size = self.batch_size
        tail = b""
        base = self._pos
        ts_l: list[int] = []
        fr_l: list[bytes] = []
        ol_l: list[int] = []
        while True:
            chunk = self._f.read(CHUNK)
            if not chunk:
                break
            data = tail + chunk if tail else chunk
            n = len(data)
            pos = 0
            while pos + 16 <= n:
                sec, frac, incl, orig = rec(data, pos)
                nxt = pos + 16 + incl
                if nxt > n:
                    if incl > MAX_FRAME:
                        raise CaptureFormatError(f"record claims {incl} captured bytes", base + pos)
                    break
                ts_l.append(sec * 1_000_000_000 + frac * mult)
                fr_l.append(data[pos + 16 : nxt])
                ol_l.append(orig)
                pos = nxt
                if len(fr_l) >= size:
                    yield PacketBatch(linktype, ts_l, fr_l, ol_l)
                    ts_l, fr_l, ol_l = [], [], []
            tail = data[pos:]
            base += pos
        if tail:
            self.truncated_tail = True
        if fr_l:
            yield PacketBatch(linktype, ts_l, fr_l, ol_l)

    # -- pcapng ------------------------------------------------------------------------------------

    def _fill(self, need: int) -> bool:
        while len(self._buf) < need:
            chunk = self._f.read(max(CHUNK, need - len(self._buf)))
            if not chunk:
                return False
            self._buf += chunk
        return True

    def _prime_pcapng(self) -> None:
        self._consumed = 0
        # Read blocks until the first interface description so `linktype` is known up front.
        self._pending: list[tuple[int, int, bytes, int]] = []
        for item in self._pcapng_blocks():
            if item is not None:
                self._pending.append(item)
            if self._ifaces:
                break
        if not self._ifaces:
            raise CaptureFormatError("pcapng file without an interface description block", self._consumed)
        self.linktype = self._ifaces[0].linktype
        self.snaplen = self._ifaces[0].snaplen
        self.nanosecond = self._ifaces[0].mul == 1 and self._ifaces[0].div == 1 and not self._ifaces[0].shift

    def _pcapng_blocks(self) -> Iterator[tuple[int, int, bytes, int] | None]:
        """Yield (linktype, ts_ns, frame, orig_len) per packet, None for other blocks."""
        while True:
            if not self._fill(12):
                if self._buf:
                    self.truncated_tail = True
                return
            buf = self._buf
            btype = struct.unpack_from(self._endian + "I", buf, 0)[0]
            if btype == PCAPNG_SHB:
                bom = struct.unpack_from("<I", buf, 8)[0]
                if bom == _BOM:
                    self._endian = "<"
                elif bom == 0x4D3C2B1A:
                    self._endian = ">"
                else:
                    raise CaptureFormatError("bad pcapng byte-order magic", self._consumed)
                self._ifaces = [] if not hasattr(self, "_ifaces") else self._ifaces
                self._ifaces.clear()
            e = self._endian
            blen = struct.unpack_from(e + "I", buf, 4)[0]
            if blen < 12 or blen % 4 or blen > MAX_FRAME + 64:
                raise CaptureFormatError(f"bad pcapng block length {blen}", self._consumed)
            if not self._fill(blen):
                self.truncated_tail = True
                return
            buf = self._buf
            body = bytes(buf[8 : blen - 4])
            del buf[:blen]
            at = self._consumed
            self._consumed += blen
            if btype == 1:  # interface description
                if len(body) < 8:
                    raise CaptureFormatError("short interface description block", at)
                link, _res, snaplen = struct.unpack_from(e + "HHI", body, 0)
                iface = _Iface(link, snaplen)
                for code, value in _options(body, 8, e):
                    if code == 9 and value:
                        iface.mul, iface.div, iface.shift = _ts_to_ns_factor(value[0])
                    elif code == 14 and len(value) == 8:
                        iface.offset_ns = struct.unpack(e + "q", value)[0] * _NS
                self._ifaces.append(iface)
                yield None
            elif btype == 6 or btype == 2:  # enhanced packet / obsolete packet
                if len(body) < 20:
                    raise CaptureFormatError("short packet block", at)
                if btype == 6:
                    ifid, hi, lo, incl, orig = struct.unpack_from(e + "IIIII", body, 0)
                else:
                    ifid, _drops, hi, lo, incl, orig = struct.unpack_from(e + "HHIIII", body, 0)
                if ifid >= len(self._ifaces) or 20 + incl > len(body):
                    raise CaptureFormatError("packet block with bad interface or length", at)
                iface = self._ifaces[ifid]
                yield iface.linktype, iface.ns(hi << 32 | lo), body[20 : 20 + incl], orig
            elif btype == 3:  # simple packet: no time; interface 0
                if not self._ifaces or len(body) < 4:
                    raise CaptureFormatError("simple packet block without interface", at)
                orig = struct.unpack_from(e + "I", body, 0)[0]
                iface = self._ifaces[0]
                incl = min(orig, iface.snaplen or orig, len(body) - 4)
                yield iface.linktype, 0, body[4 : 4 + incl], orig
            else:
                yield None

    def _iter_pcapng(self) -> Iterator[PacketBatch]:
        size = self.batch_size
        cur = -1
        ts_l: list[int] = []
        fr_l: list[bytes] = []
        ol_l: list[int] = []

        def items() -> Iterator[tuple[int, int, bytes, int] | None]:
            yield from self._pending
            self._pending = []
            yield from self._pcapng_blocks()

        for item in items():
            if item is None:
                continue
            link, ts, frame, orig = item
            if link != cur or len(fr_l) >= size:
                if fr_l:
                    yield PacketBatch(cur, ts_l, fr_l, ol_l)
                    ts_l, fr_l, ol_l = [], [], []
                cur = link
            ts_l.append(ts)
            fr_l.append(frame)
            ol_l.append(orig)
        if fr_l:
            yield PacketBatch(cur, ts_l, fr_l, ol_l)

    # -- public ------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[PacketBatch]:
        return self._iter_pcap() if self.format == "pcap" else self._iter_pcapng()

    def close(self) -> None:
        """Close the file if this reader opened it."""
        if self._own:
            self._f.close()

    def __enter__(self) -> CaptureFileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pcap_scanner():  # noqa: ANN202 - see vmproto.sensor.decode.kernel.pcap_scanner
    # Imported here: the decode package imports capture.frames, so a module-level import would be circular.
    from vmproto.sensor.decode.kernel import pcap_scanner

    return pcap_scanner()


def _options(body: bytes, pos: int, e: str) -> Iterator[tuple[int, bytes]]:
    n = len(body)
    while pos + 4 <= n:
        code, olen = struct.unpack_from(e + "HH", body, pos)
        if code == 0:
            return
        yield code, body[pos + 4 : pos + 4 + olen]
        pos += 4 + ((olen + 3) & ~3)


def read_capture(source: str | os.PathLike[str] | BinaryIO | bytes) -> list[PacketBatch]:
    """Read a whole capture (path, file object, or the file's bytes) into a list of batches."""
    if isinstance(source, bytes | bytearray):
        source = io.BytesIO(source)
    with CaptureFileReader(source) as reader:
        return list(reader)
